"""The pre-rollout gate: one artifact on a fleet, budgets, parity, accuracy; JUnit/JSON/HTML."""

from toolkit.validate.gate import GateConfig, run_gate, validate_device
from toolkit.validate.junit import write_junit
from toolkit.validate.report import render_text, write_html, write_json
from toolkit.validate.result import CheckResult, DeviceReport, GateReport

__all__ = [
    "CheckResult", "DeviceReport", "GateConfig", "GateReport", "render_text", "run_gate",
    "validate_device", "write_html", "write_json", "write_junit",
]
