#!/bin/sh
# Installs (or upgrades in place) the edgeloop device agent on this device and starts it.
#
#   sh install.sh --agent-dir DIR [--python python3] [--port 50051] [--wheelhouse DIR]
#                 [--wheel FILE] [--requirements FILE] [--mode auto|system|user|process]
#
# - stops a running agent (systemd unit or pid file), creates DIR/venv when missing,
# - installs the edgeloop wheel and the requirements, only from --wheelhouse when given
#   (no network needed; the device's pip configuration is ignored then),
# - starts `python -m device_agent serve --host 127.0.0.1 --port PORT --cache-dir DIR/cache`:
#   as a systemd system unit (root with a running systemd), else a user unit
#   (systemctl --user works), else a background process with DIR/agent.pid and DIR/agent.log.
# The last line printed is "edgeloop-agent: mode=M pid=P port=N" (pid 0 under systemd).
set -eu

AGENT_DIR=""
PYTHON="python3"
PORT="50051"
WHEELHOUSE=""
WHEEL=""
REQUIREMENTS=""
MODE="auto"
UNIT="edgeloop-agent.service"
HERE="$(cd "$(dirname "$0")" && pwd)"

while [ $# -gt 0 ]; do
    case "$1" in
        --agent-dir) AGENT_DIR="$2"; shift 2 ;;
        --python) PYTHON="$2"; shift 2 ;;
        --port) PORT="$2"; shift 2 ;;
        --wheelhouse) WHEELHOUSE="$2"; shift 2 ;;
        --wheel) WHEEL="$2"; shift 2 ;;
        --requirements) REQUIREMENTS="$2"; shift 2 ;;
        --mode) MODE="$2"; shift 2 ;;
        *) echo "install.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
[ -n "$AGENT_DIR" ] || { echo "install.sh: --agent-dir is required" >&2; exit 2; }
mkdir -p "$AGENT_DIR/cache"
AGENT_DIR="$(cd "$AGENT_DIR" && pwd)"
PIDFILE="$AGENT_DIR/agent.pid"
VENV="$AGENT_DIR/venv"

systemd_mode() {
    command -v systemctl >/dev/null 2>&1 || { echo process; return; }
    if [ "$(id -u)" = "0" ]; then
        state="$(systemctl is-system-running 2>/dev/null || true)"
        case "$state" in running|degraded|starting|initializing) echo system; return ;; esac
    fi
    if systemctl --user show-environment >/dev/null 2>&1; then echo user; return; fi
    echo process
}

unit_path() {
    if [ "$1" = "system" ]; then echo "/etc/systemd/system/$UNIT"
    else echo "${XDG_CONFIG_HOME:-$HOME/.config}/systemd/user/$UNIT"; fi
}

sysctl_() {  # systemctl for a mode: sysctl_ system|user ARGS...
    m="$1"; shift
    if [ "$m" = "system" ]; then systemctl "$@"; else systemctl --user "$@"; fi
}

stop_agent() {
    for m in system user; do
        if [ -f "$(unit_path $m)" ]; then sysctl_ "$m" stop "$UNIT" 2>/dev/null || true; fi
    done
    if [ -f "$PIDFILE" ]; then
        pid="$(cat "$PIDFILE")"
        if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null \
           && grep -q device_agent "/proc/$pid/cmdline" 2>/dev/null; then
            kill "$pid"
            i=0
            while kill -0 "$pid" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
            kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
        fi
        rm -f "$PIDFILE"
    fi
}

install_packages() {
    if [ ! -x "$VENV/bin/python" ]; then
        "$PYTHON" -m venv "$VENV"
    fi
    set -- --disable-pip-version-check --no-input
    if [ -n "$WHEELHOUSE" ]; then
        export PIP_CONFIG_FILE=/dev/null
        set -- "$@" --no-index --find-links "$WHEELHOUSE"
    fi
    req=""
    [ -n "$REQUIREMENTS" ] && req="-r $REQUIREMENTS"
    # shellcheck disable=SC2086
    "$VENV/bin/python" -m pip install "$@" ${WHEEL:+"$WHEEL"} $req
    if [ -n "$WHEEL" ]; then  # same version number on an upgrade: replace the code anyway
        "$VENV/bin/python" -m pip install "$@" --no-deps --force-reinstall "$WHEEL"
    fi
    "$VENV/bin/python" -c "import device_agent" \
        || { echo "install.sh: device_agent does not import in $VENV" >&2; exit 1; }
}

wait_listening() {  # the agent prints one ready line once it listens; fail fast if it dies
    i=0
    while ! grep -q "edgeloop-agent listening on" "$AGENT_DIR/agent.log" 2>/dev/null; do
        if ! kill -0 "$1" 2>/dev/null || [ $i -ge 600 ]; then
            echo "install.sh: the agent did not start listening; agent.log:" >&2
            tail -n 20 "$AGENT_DIR/agent.log" >&2
            exit 1
        fi
        sleep 0.1; i=$((i + 1))
    done
}

start_agent() {
    mode="$1"
    if [ "$mode" = "system" ] || [ "$mode" = "user" ]; then
        path="$(unit_path "$mode")"
        mkdir -p "$(dirname "$path")"
        wanted="multi-user.target"; [ "$mode" = "user" ] && wanted="default.target"
        sed -e "s#@AGENT_DIR@#$AGENT_DIR#g" -e "s#@PORT@#$PORT#g" -e "s#@WANTED_BY@#$wanted#g" \
            "$HERE/edgeloop-agent.service" > "$path.tmp"
        if [ "$mode" = "user" ]; then
            sed -i '/# BEGIN hardening/,/# END hardening/d' "$path.tmp"
        fi
        mv "$path.tmp" "$path"
        sysctl_ "$mode" daemon-reload
        sysctl_ "$mode" enable "$UNIT" >/dev/null 2>&1 || true
        sysctl_ "$mode" restart "$UNIT"
        echo "edgeloop-agent: mode=$mode pid=0 port=$PORT"
        return
    fi
    cd "$AGENT_DIR"
    if command -v setsid >/dev/null 2>&1; then launcher="setsid"; else launcher=""; fi
    PYTHONUNBUFFERED=1 nohup $launcher "$VENV/bin/python" -m device_agent serve \
        --host 127.0.0.1 --port "$PORT" --cache-dir "$AGENT_DIR/cache" \
        > "$AGENT_DIR/agent.log" 2>&1 < /dev/null &
    pid=$!
    echo "$pid" > "$PIDFILE"
    wait_listening "$pid"
    echo "edgeloop-agent: mode=process pid=$pid port=$PORT"
}

[ "$MODE" = "auto" ] && MODE="$(systemd_mode)"
case "$MODE" in system|user|process) ;; *) echo "install.sh: bad --mode $MODE" >&2; exit 2 ;; esac
stop_agent
install_packages
start_agent "$MODE"
