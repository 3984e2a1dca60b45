"""Exporters (TFLite, ONNX), the quantization plan they follow, and host-side parity checks."""

from toolkit.export.onnx import export_onnx
from toolkit.export.parity import ParityReport, check_parity
from toolkit.export.plan import QuantizationPlan
from toolkit.export.tflite import export_tflite

__all__ = ["QuantizationPlan", "ParityReport", "check_parity", "export_onnx", "export_tflite"]
