"""The human report of a gate run: plain text for the terminal, and a standalone HTML page."""

from __future__ import annotations

import html
import json
import time
from pathlib import Path

from toolkit.validate.result import DeviceReport, GateReport


def _verdict(passed: bool) -> str:
    return "PASS" if passed else "FAIL"


def summary_line(report: GateReport) -> str:
    """One line: artifact, fleet, verdict and how many devices passed."""
    ok = sum(d.passed for d in report.devices)
    return (f"{Path(report.artifact).name} (sha256 {report.artifact_sha256[:12]}, "
            f"{report.artifact_size_bytes / 1024:.1f} KiB, {report.precision}) on fleet "
            f"{report.fleet}: {'PASSED' if report.passed else 'FAILED'} — {ok}/"
            f"{len(report.devices)} devices passed in {report.duration_s:.1f} s")


def _device_head(device: DeviceReport) -> str:
    where = ", ".join(x for x in (device.address, device.hostname, device.runtime) if x)
    return f"[{_verdict(device.passed)}] {device.device} ({where}) {device.duration_s:.1f} s"


def render_text(report: GateReport) -> str:
    """Per device: each check with PASS/FAIL and what was measured against what."""
    width = max((len(c.check) for c in report.checks), default=10)
    lines = [summary_line(report), ""]
    for device in report.devices:
        lines.append(_device_head(device))
        for c in device.checks:
            lines.append(f"    {_verdict(c.passed)}  {c.check:<{width}}  {c.message}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


_CSS = """body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:0 0 1.5em 0;min-width:60em}
td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}
.PASS{background:#e6f4ea;color:#137333;font-weight:bold}
.FAIL{background:#fce8e6;color:#a50e0e;font-weight:bold}
code{font-size:90%}"""


def render_html(report: GateReport) -> str:
    """A self-contained HTML page (no scripts, no external assets)."""
    e = html.escape
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>edgeloop validate {e(Path(report.artifact).name)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1 class='{_verdict(report.passed)}'>{e(summary_line(report))}</h1>",
        f"<p>Started {e(time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(report.started_unix)))}"
        f"; settings <code>{e(json.dumps(report.settings, default=str))}</code></p>",
    ]
    for device in report.devices:
        parts.append(f"<h2 class='{_verdict(device.passed)}'>{e(_device_head(device))}</h2>")
        parts.append("<table><tr><th>check</th><th>result</th><th>measured</th>"
                     "<th>limit</th><th>detail</th></tr>")
        for c in device.checks:
            measured = "" if c.measured is None else f"{c.measured:.4g} {c.unit}"
            limit = "" if c.limit is None else f"{c.limit:g} {c.unit}"
            parts.append(
                f"<tr><td>{e(c.check)}</td><td class='{_verdict(c.passed)}'>"
                f"{_verdict(c.passed)}</td><td>{e(measured)}</td><td>{e(limit)}</td>"
                f"<td>{e(c.message)}</td></tr>")
        parts.append("</table>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write_html(report: GateReport, path: Path) -> Path:
    """Writes the HTML report (parent folders created); returns its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(report), encoding="utf-8")
    return path


def write_json(report: GateReport, path: Path) -> Path:
    """Writes the whole report as JSON (measurements with raw samples)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report.to_json(), indent=2, default=str) + "\n", encoding="utf-8")
    return path
