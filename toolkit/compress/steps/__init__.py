"""The recipe steps: one module per recipe key (quantization is a package of its own)."""
