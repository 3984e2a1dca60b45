"""edgeloop host side: CLI, compression, export, device clients, tuner, validation, results."""

from device_agent import __version__

__all__ = ["__version__"]
