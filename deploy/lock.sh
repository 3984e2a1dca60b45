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
# protocol on a fresh machine gives the committed files. Review the diff and commit it.
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
