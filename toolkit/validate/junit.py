"""JUnit XML for CI: one testsuite per device, one testcase per device and check."""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from pathlib import Path

from toolkit.validate.result import GateReport


def junit_tree(report: GateReport) -> ET.ElementTree:
    """Builds the XML: failed checks carry a <failure> with the reason; nothing is skipped."""
    failures = sum(1 for c in report.checks if not c.passed)
    root = ET.Element("testsuites", {
        "name": f"edgeloop validate {Path(report.artifact).name}",
        "tests": str(len(report.checks)), "failures": str(failures), "errors": "0",
        "time": f"{report.duration_s:.3f}",
    })
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(report.started_unix))
    for device in report.devices:
        suite = ET.SubElement(root, "testsuite", {
            "name": device.device, "tests": str(len(device.checks)),
            "failures": str(len(device.failures)), "errors": "0", "skipped": "0",
            "time": f"{device.duration_s:.3f}", "timestamp": stamp,
            "hostname": device.hostname or device.address or device.device,
        })
        props = ET.SubElement(suite, "properties")
        for name, value in (("artifact", report.artifact), ("sha256", report.artifact_sha256),
                            ("fleet", report.fleet), ("precision", report.precision),
                            ("address", device.address), ("runtime", device.runtime)):
            ET.SubElement(props, "property", {"name": name, "value": str(value or "")})
        for check in device.checks:
            case = ET.SubElement(suite, "testcase", {
                "classname": f"edgeloop.validate.{device.device}",
                "name": f"{device.device}.{check.check}", "time": f"{check.duration_s:.3f}",
            })
            if not check.passed:
                failure = ET.SubElement(case, "failure", {"message": check.message,
                                                          "type": check.check})
                failure.text = f"{device.device}: {check.check}: {check.message}"
            ET.SubElement(case, "system-out").text = check.message
    ET.indent(root)
    return ET.ElementTree(root)


def write_junit(report: GateReport, path: Path) -> Path:
    """Writes the JUnit XML file (parent folders created); returns its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    junit_tree(report).write(path, encoding="utf-8", xml_declaration=True)
    return path
