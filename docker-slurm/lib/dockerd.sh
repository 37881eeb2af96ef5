#!/usr/bin/env bash
# A private Docker engine for the compose test clusters, started by hand (no systemd):
# its own data-root, exec-root, socket and pid file, no bridge, no iptables, no NAT. Every
# container runs with host networking (docker-compose.yml), so nothing here touches the
# host's network configuration, and a Docker engine the host already runs is left alone.
#   dockerd.sh start | stop | status | env
# `env` prints the DOCKER_HOST line the docker and docker-compose clients need.
set -euo pipefail
# shellcheck source=docker-slurm/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

CP_DOCKER_DATA="${CP_DOCKER_DATA:-/var/lib/computeproof-docker}"
CP_DOCKER_EXEC="${CP_DOCKER_EXEC:-/run/cpdocker}"
CP_DOCKER_SOCK="${CP_DOCKER_SOCK:-/run/cpdocker.sock}"
CP_DOCKER_PID="$CP_DOCKER_EXEC.pid"
CP_DOCKER_LOG="${CP_DOCKER_LOG:-/var/log/computeproof-dockerd.log}"
export DOCKER_HOST="unix://$CP_DOCKER_SOCK"

engine_pid() {
    local pid
    [[ -s "$CP_DOCKER_PID" ]] || return 1
    pid="$(tr -dc '0-9' <"$CP_DOCKER_PID")"
    [[ -n "$pid" && "$(cat "/proc/$pid/comm" 2>/dev/null)" == dockerd ]] || return 1
    echo "$pid"
}

cmd_start() {
    local pid
    if pid="$(engine_pid)"; then
        log "dockerd already running (pid $pid, $DOCKER_HOST)"
        return 0
    fi
    command -v dockerd >/dev/null || die "dockerd not found: apt-get install docker.io docker-compose mmdebstrap"
    # an engine that was killed (a session's end) leaves its network namespace mounted
    if mountpoint -q "$CP_DOCKER_EXEC/netns/default" 2>/dev/null; then
        umount "$CP_DOCKER_EXEC/netns/default" || true
    fi
    mkdir -p "$CP_DOCKER_DATA" "$CP_DOCKER_EXEC" "$(dirname "$CP_DOCKER_LOG")"
    cat >"$CP_DOCKER_DATA/daemon.json" <<JSON
{
  "bridge": "none",
  "iptables": false,
  "ip6tables": false,
  "ip-forward": false,
  "ip-masq": false,
  "storage-driver": "overlay2",
  "data-root": "$CP_DOCKER_DATA",
  "exec-root": "$CP_DOCKER_EXEC",
  "pidfile": "$CP_DOCKER_PID",
  "hosts": ["unix://$CP_DOCKER_SOCK"]
}
JSON
    log "starting dockerd ($DOCKER_HOST, data in $CP_DOCKER_DATA, log $CP_DOCKER_LOG)"
    setsid dockerd --config-file "$CP_DOCKER_DATA/daemon.json" </dev/null >>"$CP_DOCKER_LOG" 2>&1 &
    if ! wait_for 60 "dockerd to answer on $CP_DOCKER_SOCK" docker version; then
        tail -n 20 "$CP_DOCKER_LOG" >&2 || true
        die "dockerd did not start; see $CP_DOCKER_LOG"
    fi
    log "dockerd up (pid $(engine_pid))"
}

cmd_stop() {
    local pid
    if pid="$(engine_pid)"; then
        log "stopping dockerd (pid $pid)"
        kill -TERM "$pid"
        wait_for 60 "dockerd to exit" bash -c "! kill -0 $pid" || {
            warn "dockerd ignored TERM for 60s; killing it"
            kill -KILL "$pid" 2>/dev/null || true
        }
    fi
    rm -f "$CP_DOCKER_PID"
    # dockerd leaves its default network namespace mounted; a later start would trip on it
    if mountpoint -q "$CP_DOCKER_EXEC/netns/default" 2>/dev/null; then
        umount "$CP_DOCKER_EXEC/netns/default"
    fi
}

cmd_status() {
    local pid
    if pid="$(engine_pid)"; then
        echo "dockerd running (pid $pid, $DOCKER_HOST)"
    else
        echo "dockerd not running"
        return 1
    fi
}

cmd_env() { printf 'export DOCKER_HOST=%q\n' "$DOCKER_HOST"; }

case "${1:-}" in
start | stop | status | env) "cmd_$1" ;;
*) die "usage: dockerd.sh start|stop|status|env" ;;
esac
