#!/usr/bin/env bash
# The test harness's view of a running compose cluster, from inside one of its hosts: the
# same `status`, `up` and `env` as the native docker-slurm/cluster, so tests/integration
# runs unchanged (CP_CLUSTER_SCRIPT names this script). Daemons run on other hosts, so a
# daemon counts as running when it answers its protocol (munge, SQL, slurmdbd, slurmctld,
# a responding node) and its host recorded a pid (/var/tmp/computeproof-hosts/HOST/).
#   compose-harness.sh status | up | env
# Starting and stopping the cluster is the Docker host's: docker-slurm/compose-cluster.
set -euo pipefail
export CP_MODE=compose
# shellcheck source=docker-slurm/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

HOSTS_DIR=/var/tmp/computeproof-hosts

# recorded HOST NAME: the pid HOST recorded for its daemon NAME.
recorded() { tr -dc '0-9' 2>/dev/null <"$HOSTS_DIR/$1/$2.pid"; }

node_responds() {
    local state
    state="$(sinfo -h -n "$1" -o '%t' 2>/dev/null | head -n1)"
    [[ -n "$state" && "$state" != *'*' && "$state" != down* ]]
}

probe() {
    case "$1" in
    munged) munge -S "$CP_MUNGE_SOCKET" -n | unmunge -S "$CP_MUNGE_SOCKET" ;;
    mariadbd)
        mariadb --no-defaults --connect-timeout=2 -h "$CP_DB_HOST" -P "$CP_MARIADB_PORT" \
            -u "$CP_DB_USER" "-p$CP_DB_PASS" -e 'SELECT 1'
        ;;
    slurmdbd) sacctmgr -n -P show cluster format=cluster ;;
    slurmctld) scontrol ping | grep -q 'is UP' ;;
    slurmd-*) node_responds "${1#slurmd-}" ;;
    agent-*) test -S "$CP_CPROOF_DIR/run/${1#agent-}/agent.sock" ;;
    esac
}

host_of() {
    case "$1" in
    munged) hostname ;;
    mariadbd) echo mariadb ;;
    slurmd-* | agent-*) echo "${1#*-}" ;;
    *) echo "$1" ;;
    esac
}

cmd_status() {
    local name pid ok=0 node
    local names=(munged mariadbd slurmdbd slurmctld)
    for node in "${CP_NODES[@]}"; do names+=("slurmd-$node"); done
    for node in "${CP_NODES[@]}"; do names+=("agent-$node"); done
    for name in "${names[@]}"; do
        pid="$(recorded "$(host_of "$name")" "$name" || true)"
        if [[ -n "$pid" ]] && probe "$name" >/dev/null 2>&1; then
            printf '%-12s running (pid %s)\n' "$name" "$pid"
        else
            printf '%-12s not running\n' "$name"
            ok=1
        fi
    done
    # the controller's collector runs beside slurmctld, on this host; so does the
    # collector service with CP_LEDGER=collector
    "$CP_LIB_DIR/controller.sh" status || ok=1
    if [[ "$CP_LEDGER" == collector ]]; then
        collector status | sed 's/^/collector: /' || ok=1
    fi
    sinfo -h -N -o '%N %t' 2>/dev/null | sort -u | sed 's/^/node /' || true
    return "$ok"
}

cmd_up() {
    if cmd_status >/dev/null 2>&1; then
        log "already up (compose cluster, state in $CP_CLUSTER_DIR); nothing to do"
        return 0
    fi
    local node
    for node in "${CP_NODES[@]}"; do
        wait_for 180 "node $node to respond" node_responds "$node" ||
            die "node $node not up; see $CP_LOG_DIR/slurmd-$node.log"
        wait_for 60 "agent-$node" probe "agent-$node" || die "agent-$node not up"
    done
    # a node may answer before its slurmd has written its pid file
    wait_for 60 "every daemon" cmd_status || { cmd_status >&2; die "compose cluster not fully up"; }
    log "up: $(sinfo -h -N -o '%N %t' | sort -u | tr '\n' ' ')"
}

cmd_env() {
    printf 'export SLURM_CONF=%q\n' "$SLURM_CONF"
    printf 'export COMPUTEPROOF_CONFIG=%q\n' "$COMPUTEPROOF_CONFIG"
    printf 'export CP_CLUSTER_DIR=%q\n' "$CP_CLUSTER_DIR"
    printf 'export CP_LEDGER=%q\n' "$CP_LEDGER"
    if [[ "$CP_LEDGER" == collector ]]; then
        printf 'export CP_COLLECTOR_CONFIG=%q\n' "$CP_COLLECTOR_DIR/collector.toml"
    fi
}

case "${1:-}" in
status | up | env) "cmd_$1" ;;
down | clean) die "stop a compose cluster from the Docker host: docker-slurm/compose-cluster down DIST" ;;
*) die "usage: compose-harness.sh status|up|env" ;;
esac
