"""Exported model files as `compress` inputs: one module per entry format (see `base.py`)."""
