#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: system packages the integration tests need
# (a real sshd, iproute2, PostgreSQL, chromium), the project with its host and dev extras at the
# versions in the lock (deploy/constraints.txt; refreshed by `bash deploy/lock.sh`), then pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/ci-system-deps.sh
python -m pip install --quiet --disable-pip-version-check -c deploy/constraints.txt torch==2.13.0 -e ".[host,cluster,dashboard,serial,pte,dev]"
exec python -m pytest -q -p no:cacheprovider "$@"
