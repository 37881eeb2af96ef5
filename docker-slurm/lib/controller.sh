#!/usr/bin/env bash
# The controller's collector of the test cluster: `computeproof controller run`, one per
# cluster (it writes scheduled, completed and final_state for every job into the spool).
#   controller.sh up | down | status
# CP_COLLECTOR=0 leaves it out (the throughput benchmark's "collector off" baseline).
set -euo pipefail
# shellcheck source=docker-slurm/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

PYTHON="${PYTHON:-python3}"
PID_FILE="$CP_RUN_DIR/controller.pid"

collector_pid() {
    local pid
    [[ -s "$PID_FILE" ]] || return 1
    pid="$(tr -dc '0-9' <"$PID_FILE")"
    [[ -n "$pid" && -r "/proc/$pid/cmdline" ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "controller run" || return 1
    echo "$pid"
}

cmd_up() {
    local pid
    if [[ "${CP_COLLECTOR:-1}" == 0 ]]; then
        cmd_down
        return 0
    fi
    if pid="$(collector_pid)"; then
        log "controller collector already running (pid $pid)"
        return 0
    fi
    local logfile="$CP_LOG_DIR/controller.log" lines
    touch "$logfile"
    lines="$(wc -l <"$logfile")"
    (
        cd "$CP_REPO"
        export COMPUTEPROOF_CONFIG="$CP_CPROOF_CONFIG"
        setsid "$PYTHON" -m slurm_hooks controller run </dev/null >>"$logfile" 2>&1 &
        echo $! >"$PID_FILE"
    )
    if ! wait_for 20 "the collector to poll" \
        bash -c "tail -n +$((lines + 1)) '$logfile' | grep -q 'polling every'"; then
        tail -n 20 "$CP_LOG_DIR/controller.log" >&2 || true
        die "the controller's collector did not start; see $CP_LOG_DIR/controller.log"
    fi
    log "controller collector up (pid $(collector_pid))"
}

cmd_down() {
    local pid
    if pid="$(collector_pid)"; then
        log "stopping the controller collector (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
        wait_for 15 "the collector to exit" bash -c "! kill -0 $pid" ||
            kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$PID_FILE"
}

cmd_status() {
    local pid
    if pid="$(collector_pid)"; then
        printf '%-12s running (pid %s)\n' "controller" "$pid"
    elif [[ "${CP_COLLECTOR:-1}" == 0 ]]; then
        printf '%-12s off (CP_COLLECTOR=0)\n' "controller"
    else
        printf '%-12s not running\n' "controller"
        return 1
    fi
}

case "${1:-}" in
up) cmd_up ;;
down) cmd_down ;;
status) cmd_status ;;
*) die "usage: controller.sh up|down|status" ;;
esac
