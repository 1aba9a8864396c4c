"""kubirun: a low-level Linux container runtime in Python.

This module stays import-free on purpose: ``kubirun --help`` and the path
from ``main`` to ``execve`` must not pay for anything they do not use.
"""
__version__ = "0.1.0"

# The runtime-spec version whose config.json kubirun speaks.
OCI_SPEC_VERSION = "1.2.0"
