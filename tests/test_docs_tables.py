"""The benchmark tables in docs/ and README's headline figures are generated from bench/results:
a figure typed by hand, or a results file re-run without regenerating, fails here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import report

ROOT = Path(__file__).resolve().parent.parent


def test_committed_benchmark_tables_are_what_the_results_files_give():
    done = subprocess.run(
        [sys.executable, "bench/report.py", "--check"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr


def _repeat_file(folder: Path, values: list[float]) -> None:
    runs = [{"provenance": {"git": {"sha": "a" * 40, "dirty": False},
                            "when": f"2026-12-0{i + 1} 10:00:00 UTC",
                            "machine": {"cpu": "Test CPU", "cores": 2}},
             "figures": {"p50_ms": v}, "met": {"p50_ms": v < 2}}
            for i, v in enumerate(values)]
    data = {"provenance": runs[0]["provenance"], "script": "bench/bench_x.py", "script_args": [],
            "runs_asked": len(values), "runs_with_results": len(values),
            "commits": ["a" * 40], "figures": {}, "results": runs,
            "runs": [{"run": i + 1, "load_avg_before": [0.5 + i, 1, 1], "json": ["x.json"],
                      "provenance": r["provenance"]} for i, r in enumerate(runs)]}
    (folder / "x.repeat.json").write_text(json.dumps(data))


def test_a_repeated_figure_is_the_median_of_its_runs_with_min_and_max(tmp_path):
    _repeat_file(tmp_path, [1.0, 3.0, 1.5])
    page = report.render({"x.repeat": report.Spec("X", (report.Figures(("figures.*",)),))},
                         results=tmp_path)
    row = next(line for line in page.splitlines() if line.startswith("| `figures.p50_ms`"))
    assert [c.strip() for c in row.strip("|").split("|")] == [
        "`figures.p50_ms`", "1.5 [1, 3]", "", "met in 2 of 3"]
    assert "python bench/repeat.py bench/bench_x.py --runs 3" in page
    assert "0.5, 1.5, 2.5" in page  # the load at the start of each run


def test_a_spec_naming_a_figure_the_file_lacks_is_an_error_naming_the_file(tmp_path):
    _repeat_file(tmp_path, [1.0])
    spec = report.Spec("X", (report.Figures(("figures.renamed_ms",)),))
    with pytest.raises(report.ReportError, match=r"x\.repeat\.json.*figures\.renamed_ms"):
        report.render({"x.repeat": spec}, results=tmp_path)
