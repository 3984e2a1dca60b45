"""Device profiles: the shipped examples load, and bad files fail naming the file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from toolkit.devices.connect import resolve_profile
from toolkit.devices.profile import load_profile
from toolkit.errors import ConfigError
from toolkit.paths import REPO_ROOT

SHIPPED = sorted((REPO_ROOT / "profiles").glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_every_shipped_profile_loads(path: Path):
    profile = load_profile(str(path))
    assert profile.name == path.stem
    assert profile.budgets.items(), f"{path.name} sets no budgets"


def test_device_specs_resolve_to_profiles():
    assert resolve_profile("local").transport == "local"
    assert resolve_profile("10.0.0.7:50051").address == "10.0.0.7:50051"
    assert resolve_profile("jetson-orin-nano").tunnel == "ssh"


@pytest.mark.parametrize(
    "text,expected",
    [
        (
            "name: x\naddress: h:1\nbudgets: {latency_p90_ms: -3}\n",
            "budgets.latency_p90_ms: expected a positive number",
        ),
        ("name: x\naddress: h:1\nbudgets: {latency_ms: 3}\n", "budgets.latency_ms: unknown budget"),
        ("name: x\naddress: h:1\ncolour: red\n", "colour: unknown field"),
        ("name: x\ntransport: carrier-pigeon\naddress: h:1\n", "transport: expected one of"),
        ("name: x\naddress: nowhere\n", "address: expected 'host:port'"),
        ("name: x\ntransport: ssh\n", "ssh: expected a mapping"),
        ("name: x\naddress: h:1\nthreads: many\n", "threads: expected a whole number"),
        ("name: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_profiles_name_the_file_and_the_key(tmp_path: Path, text: str, expected: str):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_profile(str(path))
    assert str(path) in str(caught.value)
    assert expected in str(caught.value)


def test_unknown_profile_name_lists_where_it_looked():
    with pytest.raises(ConfigError, match="device profile 'no-such-board' not found"):
        resolve_profile("no-such-board")
