# shellcheck shell=bash
# Shared settings and functions for the ComputeProof test cluster. Sourced, never run.
#
# Both ways of running the cluster use these: natively on one host (docker-slurm/cluster,
# CP_MODE=native, every daemon on 127.0.0.1 with private ports and a private munge socket)
# and in Docker Compose (CP_MODE=compose, one container per role, hosts named by service).

CP_LIB_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CP_REPO="${CP_REPO:-$(cd "$CP_LIB_DIR/../.." && pwd)}"
CP_MODE="${CP_MODE:-native}"
CP_CLUSTER_DIR="${CP_CLUSTER_DIR:-/var/tmp/computeproof-cluster}"
CP_HOOKS="${CP_HOOKS:-1}"
CP_CTLD_HOOKS="${CP_CTLD_HOOKS:-0}" # 1: also PrologSlurmctld/EpilogSlurmctld
# Where events go. sqlite: one ledger file on this host, forwarded into by hand (the tests)
# or by an agent. collector: as a site of many hosts: a spool and a host key per node
# (spool/%n, keys/%n.key), each node's agent and the controller's collector posting over
# HTTPS to `computeproof serve` on a private PostgreSQL (scripts/collector); no ledger file.
CP_LEDGER="${CP_LEDGER:-sqlite}"
CP_CLUSTER_NAME="cptest"
CP_NODES=(c1 c2)
CP_GPUS_PER_NODE=4
CP_ACCOUNTS=(physics biology chemistry)
# user:default account:other accounts (comma separated, may be empty)
CP_USERS=(cpalice:physics:biology cpbob:biology: cpcarol:chemistry:)

# Private ports, away from Slurm's defaults (6817-6819) and MariaDB's (3306). Each can be
# overridden, so that clusters on one host's network (a compose cluster runs with host
# networking) do not collide: docker-slurm/compose-cluster gives every cluster its own.
CP_SLURMCTLD_PORT="${CP_SLURMCTLD_PORT:-16817}"
CP_SLURMDBD_PORT="${CP_SLURMDBD_PORT:-16819}"
CP_SLURMD_PORT_BASE="${CP_SLURMD_PORT_BASE:-16821}" # c1 16821, c2 16822
CP_SRUN_PORTS="${CP_SRUN_PORTS:-16840-16880}"
CP_MARIADB_PORT="${CP_MARIADB_PORT:-13306}"
CP_COLLECTOR_PORT="${CP_COLLECTOR_PORT:-16843}" # CP_LEDGER=collector: HTTPS
CP_COLLECTOR_PG_PORT="${CP_COLLECTOR_PG_PORT:-16844}" # its PostgreSQL
CP_DB_NAME=slurm_acct_db
CP_DB_USER=cpslurm
CP_DB_PASS=cpslurm-test-only

CP_CONF_DIR="$CP_CLUSTER_DIR/etc"
CP_RUN_DIR="$CP_CLUSTER_DIR/run"
CP_LOG_DIR="$CP_CLUSTER_DIR/log"
CP_STATE_DIR="$CP_CLUSTER_DIR/state"
CP_DEV_DIR="$CP_CLUSTER_DIR/dev"
CP_MUNGE_DIR="$CP_CLUSTER_DIR/munge"
CP_MYSQL_DIR="$CP_CLUSTER_DIR/mysql"
CP_CPROOF_DIR="$CP_CLUSTER_DIR/computeproof"
CP_CPROOF_CONFIG="$CP_CPROOF_DIR/config.toml"
CP_COLLECTOR_DIR="$CP_CLUSTER_DIR/collector" # CP_LEDGER=collector: scripts/collector --dir
# Where the hooks look for their config; overridable so tests can write configs in a temp dir.
CP_ETC_CONFIG="${CP_ETC_CONFIG:-/etc/computeproof/config.toml}"
CP_MUNGE_KEY="$CP_MUNGE_DIR/munge.key"
CP_MARIADB_SOCKET="$CP_MYSQL_DIR/mysqld.sock"

if [[ "$CP_MODE" == compose ]]; then
    # Each container runs its own munged on the default socket; hosts are service names.
    CP_MUNGE_SOCKET="/run/munge/munge.socket.2"
    # $CP_CLUSTER_DIR is a volume shared by all containers; pid files are per container.
    CP_RUN_DIR="${CP_CONTAINER_RUN_DIR:-/run/computeproof-cluster}"
    CP_MUNGE_LOG="$CP_LOG_DIR/munged-$(hostname).log"
    CP_CTLD_HOST="slurmctld"
    CP_CTLD_ADDR="slurmctld"
    CP_DBD_HOST="slurmdbd"
    CP_DBD_NAME="slurmdbd"
    CP_DB_HOST="mariadb"
    CP_MARIADB_BIND="0.0.0.0"
    CP_DB_USER_HOST="%"
else
    CP_MUNGE_SOCKET="$CP_MUNGE_DIR/munge.socket"
    CP_MUNGE_LOG="$CP_LOG_DIR/munged.log"
    CP_CTLD_HOST="$(hostname -s)"
    CP_CTLD_ADDR="127.0.0.1"
    CP_DBD_HOST="127.0.0.1"
    CP_DBD_NAME="$CP_CTLD_HOST"
    CP_DB_HOST="127.0.0.1"
    CP_MARIADB_BIND="127.0.0.1"
    CP_DB_USER_HOST="127.0.0.1"
fi

# Where compose images and source builds are cached, and the Slurm built from source.
CP_CACHE_DIR="${CP_CACHE_DIR:-/var/cache/computeproof}"
CP_DEBIAN_MIRROR="${CP_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
CP_SLURM_SOURCE_VERSION="${CP_SLURM_SOURCE_VERSION:-25.11.7}"
# SchedMD's source is vendored beside the repository (shared/vendor/), never inside it.
CP_SLURM_SOURCE_TARBALL="${CP_SLURM_SOURCE_TARBALL:-$CP_REPO/../shared/vendor/slurm-$CP_SLURM_SOURCE_VERSION.tar.xz}"
CP_PYSLURM_VERSION="${CP_PYSLURM_VERSION:-25.11.2}"

export SLURM_CONF="$CP_CONF_DIR/slurm.conf"
export COMPUTEPROOF_CONFIG="$CP_CPROOF_CONFIG"

# The hooks Slurm runs, by absolute path (Slurm runs them with no PATH).
CP_HOOK_PROLOG="$CP_REPO/prolog.d/computeproof-prolog"
CP_HOOK_EPILOG="$CP_REPO/epilog.d/computeproof-epilog"
CP_HOOK_PROLOG_CTLD="$CP_REPO/prolog.d/computeproof-prolog-slurmctld"
CP_HOOK_EPILOG_CTLD="$CP_REPO/epilog.d/computeproof-epilog-slurmctld"

case "$CP_LEDGER" in sqlite | collector) ;; *)
    printf '[cluster] error: CP_LEDGER=%s: say sqlite or collector\n' "$CP_LEDGER" >&2
    exit 1
    ;;
esac

# collector ARGS...: scripts/collector (PostgreSQL + `computeproof serve`) for this cluster.
collector() { "${PYTHON:-python3}" "$CP_REPO/scripts/collector" "$1" --dir "$CP_COLLECTOR_DIR" "${@:2}"; }

log() { printf '[cluster] %s\n' "$*"; }
warn() { printf '[cluster] warning: %s\n' "$*" >&2; }
die() {
    printf '[cluster] error: %s\n' "$*" >&2
    exit 1
}

# node_port NODE: the slurmd port of NODE.
node_port() {
    local i
    for i in "${!CP_NODES[@]}"; do
        if [[ "${CP_NODES[$i]}" == "$1" ]]; then
            echo $((CP_SLURMD_PORT_BASE + i))
            return 0
        fi
    done
    die "unknown node '$1' (nodes: ${CP_NODES[*]})"
}

# node_index NODE: position of NODE in CP_NODES (c1 -> 0); its GPUs have minors
# index*CP_GPUS_PER_NODE .. +CP_GPUS_PER_NODE-1 so that nodes never share a minor number.
node_index() {
    local i
    for i in "${!CP_NODES[@]}"; do
        [[ "${CP_NODES[$i]}" == "$1" ]] && { echo "$i"; return 0; }
    done
    die "unknown node '$1' (nodes: ${CP_NODES[*]})"
}

# pid_file ROLE: where the pid of ROLE (munged, mariadbd, slurmdbd, slurmctld, slurmd-c1...) lives.
pid_file() { echo "$CP_RUN_DIR/$1.pid"; }

# pid_alive ROLE: print the pid and succeed when ROLE's recorded process is running and is
# still the program we started (a recycled pid belongs to someone else).
pid_alive() {
    local file pid comm want
    file="$(pid_file "$1")"
    [[ -s "$file" ]] || return 1
    pid="$(tr -dc '0-9' <"$file")"
    [[ -n "$pid" && -d "/proc/$pid" ]] || return 1
    comm="$(cat "/proc/$pid/comm" 2>/dev/null || true)"
    want="${1%%-*}"
    [[ "$comm" == "$want" ]] || return 1
    echo "$pid"
}

# wait_for SECONDS DESCRIPTION COMMAND...: poll COMMAND every 0.2 s until it succeeds.
wait_for() {
    local timeout="$1" what="$2" deadline
    shift 2
    deadline=$((SECONDS + timeout))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            warn "timed out after ${timeout}s waiting for $what"
            return 1
        fi
        sleep 0.2
    done
}
