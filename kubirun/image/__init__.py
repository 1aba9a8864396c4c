"""Images: turning an image argument into a root filesystem on disk."""
