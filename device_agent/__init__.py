"""edgeloop device agent: serves the wire protocol and measures models on this device.

It must start with few dependencies (grpcio, protobuf, numpy, psutil); runtimes and
sensors import their modules lazily, and nothing here imports the host `toolkit`.
"""

__version__ = "0.1.0"
