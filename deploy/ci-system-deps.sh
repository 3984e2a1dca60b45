#!/bin/sh
# System packages the integration tests need: a real OpenSSH sshd (tests/fixtures_ssh.py),
# iproute2 (`ip netns`, `tc netem`) for the fleet tests, PostgreSQL for the shared results
# database, and chromium for the dashboard's browser tests. Debian/Ubuntu, run as root.
set -eu
if [ "$(id -u)" != "0" ]; then
    echo "ci-system-deps.sh: needs root (apt-get); the SSH and netns tests skip without it" >&2
    exit 0
fi
apt-get update
apt-get install -y --no-install-recommends openssh-server iproute2 postgresql chromium
