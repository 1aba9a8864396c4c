"""kubirun's base: what every layer may use and which uses nothing else of
kubirun (errors, JSON, logging, container ids, the test kill points).
ARCHITECTURE.md draws the layers; tests/unit/test_layers.py checks them."""
