#!/usr/bin/env bash
# Refreshes deploy/constraints.txt, the lock every install in this project uses:
#
#   bash deploy/lock.sh
#
# Resolves the project with every extra the tests use in a new, empty virtual environment
# (so nothing already on this machine leaks in), then writes `pip freeze` of it. Two pins come
# from the repository itself, not from the index: torch (the CPU build README installs) and
# grpcio-tools at the version the committed gRPC code was generated with
# (GRPC_GENERATED_VERSION in device_agent/protocol/edgeloop_pb2_grpc.py), so regenerating the
# protocol on a fresh machine gives the committed files.
#
# It also writes deploy/constraints-agent-py310.txt: the device agent's own dependencies (the
# `tflite` and `onnx` extras) resolved on the oldest Python devices ship (3.10: JetPack 6,
# Ubuntu 22.04), where the host lock's numpy has no wheel. Set AGENT_PYTHON to its interpreter
# (default: python3.10 on PATH; skipped with a line when there is none). Review the diffs and
# commit them.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="host,cluster,dashboard,serial,pte,dev"
TORCH="torch==2.13.0"
GRPC_TOOLS="grpcio-tools==$(sed -n "s/^GRPC_GENERATED_VERSION = '\(.*\)'$/\1/p" \
    device_agent/protocol/edgeloop_pb2_grpc.py)"
PYTHON="${PYTHON:-python3}"
VENV="$(mktemp -d)/venv"
trap 'rm -rf "$(dirname "$VENV")"' EXIT
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$TORCH" "$GRPC_TOOLS" ".[$EXTRAS]"
{
    echo "# The lock: what \`bash deploy/lock.sh\` resolved for .[$EXTRAS] on $("$VENV/bin/python" -c 'import platform; print(f"Python {platform.python_version()}, {platform.machine()}")'),"
    echo "# $(date -u +%Y-%m-%d). Used as pip constraints by README's install and tests/run.sh; refresh with that script."
    "$VENV/bin/python" -m pip freeze --exclude-editable --disable-pip-version-check \
        | grep -v '^edgeloop[= @]'
} > deploy/constraints.txt
echo "deploy/constraints.txt: $(grep -vc '^#' deploy/constraints.txt) packages"

if [ -z "${AGENT_PYTHON:-}" ]; then
    AGENT_PYTHON="python3.10"
    if ! "$AGENT_PYTHON" -c '' >/dev/null 2>&1 && command -v pyenv >/dev/null 2>&1; then
        AGENT_PYTHON="$(ls "$(pyenv root)"/versions/3.10.*/bin/python3 2>/dev/null | tail -n 1)"
    fi
fi
if [ -z "$AGENT_PYTHON" ] || ! "$AGENT_PYTHON" -c 'import sys; assert sys.version_info[:2] == (3, 10)' >/dev/null 2>&1; then
    echo "deploy/constraints-agent-py310.txt: not refreshed, no Python 3.10 here (set AGENT_PYTHON)" >&2
    exit 0
fi
AGENT_VENV="$(dirname "$VENV")/agent-venv"
"$AGENT_PYTHON" -m venv "$AGENT_VENV"
"$AGENT_VENV/bin/python" -m pip install --quiet --disable-pip-version-check ".[tflite,onnx]"
{
    echo "# The agent's lock on the oldest Python devices ship: what \`bash deploy/lock.sh\` resolved for"
    echo "# .[tflite,onnx] on $("$AGENT_VENV/bin/python" -c 'import platform; print(f"Python {platform.python_version()}, {platform.machine()}")'), $(date -u +%Y-%m-%d)."
    "$AGENT_VENV/bin/python" -m pip freeze --exclude-editable --disable-pip-version-check \
        | grep -v '^edgeloop[= @]'
} > deploy/constraints-agent-py310.txt
echo "deploy/constraints-agent-py310.txt: $(grep -vc '^#' deploy/constraints-agent-py310.txt) packages"
