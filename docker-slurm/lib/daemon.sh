#!/usr/bin/env bash
# Start one daemon of the test cluster.
#   daemon.sh munged|mariadbd|slurmdbd|slurmctld [--foreground]
#   daemon.sh slurmd NODE [--foreground]
# Natively (`cluster up`) each daemon is started in the background, its pid recorded in
# $CP_CLUSTER_DIR/run/ROLE.pid, and the script returns once the daemon answers.
# With --foreground (compose containers) the daemon replaces this shell.
set -euo pipefail
# shellcheck source=docker-slurm/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() { die "usage: daemon.sh munged|mariadbd|slurmdbd|slurmctld|slurmd NODE [--foreground]"; }

role="${1:-}"
case "$role" in munged | mariadbd | slurmdbd | slurmctld | slurmd) ;; *) usage ;; esac
shift
node=""
if [[ "$role" == slurmd ]]; then
    node="${1:-}"
    [[ -n "$node" ]] || usage
    node_port "$node" >/dev/null
    shift
fi
foreground=0
if [[ "${1:-}" == --foreground ]]; then
    foreground=1
    shift
fi
(($# == 0)) || usage
name="$role${node:+-$node}"

if pid="$(pid_alive "$name")"; then
    log "$name already running (pid $pid)"
    ((foreground == 0)) && exit 0
    die "$name already running (pid $pid); not starting a second one"
fi

munge_ok() { munge -S "$CP_MUNGE_SOCKET" -n | unmunge -S "$CP_MUNGE_SOCKET"; }
db_ok() {
    mariadb --no-defaults --connect-timeout=2 -h "$CP_DB_HOST" -P "$CP_MARIADB_PORT" \
        -u "$CP_DB_USER" "-p$CP_DB_PASS" -e 'SELECT 1'
}
dbd_ok() { sacctmgr -n -P show cluster format=cluster; }
ctld_ok() { scontrol ping | grep -q 'is UP'; }

# launch PROGRAM ARGS...: run a daemon natively in its own session, output to its log file;
# the program writes its own pid file.
launch() {
    local logfile="$CP_LOG_DIR/$name.out"
    setsid "$@" </dev/null >>"$logfile" 2>&1 &
    # Wait for the pid file the daemon writes (daemonizing ones fork first).
    if ! wait_for 30 "$name to write $(pid_file "$name")" pid_alive "$name"; then
        tail -n 20 "$logfile" "$CP_LOG_DIR/$name.log" 2>/dev/null >&2 || true
        die "$name did not start; see $logfile and $CP_LOG_DIR/$name.log"
    fi
}

# ready SECONDS CHECK: wait for the daemon to answer, else show its log and fail.
ready() {
    if ! wait_for "$1" "$name to answer" "$2"; then
        tail -n 20 "$CP_LOG_DIR/$name.log" "$CP_LOG_DIR/$name.out" 2>/dev/null >&2 || true
        die "$name started but does not answer; see $CP_LOG_DIR/$name.log"
    fi
    log "$name up (pid $(pid_alive "$name"))"
}

start_munged() {
    mkdir -p "$(dirname "$CP_MUNGE_SOCKET")" "$CP_RUN_DIR"
    local args=(--socket="$CP_MUNGE_SOCKET" --key-file="$CP_MUNGE_KEY"
        --pid-file="$(pid_file munged)" --log-file="$CP_MUNGE_LOG"
        --seed-file="$CP_RUN_DIR/munged.seed" --force)
    if ((foreground)); then exec munged --foreground "${args[@]}"; fi
    launch munged "${args[@]}"
    ready 15 munge_ok
}

start_mariadbd() {
    local data="$CP_MYSQL_DIR/data"
    if [[ ! -d "$data/mysql" ]]; then
        log "initializing MariaDB data directory $data"
        rm -rf "$data"
        mariadb-install-db --no-defaults --user=root --datadir="$data" --skip-test-db \
            --auth-root-authentication-method=socket >"$CP_LOG_DIR/mariadb-install-db.log" 2>&1 ||
            die "mariadb-install-db failed; see $CP_LOG_DIR/mariadb-install-db.log"
    fi
    # Runs at every start, so the Slurm storage user exists whatever the data dir's history.
    cat >"$CP_MYSQL_DIR/init.sql" <<SQL
CREATE DATABASE IF NOT EXISTS $CP_DB_NAME;
CREATE USER IF NOT EXISTS '$CP_DB_USER'@'$CP_DB_USER_HOST' IDENTIFIED BY '$CP_DB_PASS';
GRANT ALL ON $CP_DB_NAME.* TO '$CP_DB_USER'@'$CP_DB_USER_HOST';
SQL
    chmod 0600 "$CP_MYSQL_DIR/init.sql"
    local args=(--no-defaults --user=root --datadir="$data" --socket="$CP_MARIADB_SOCKET"
        --port="$CP_MARIADB_PORT" --bind-address="$CP_MARIADB_BIND" --skip-name-resolve
        --pid-file="$(pid_file mariadbd)" --log-error="$CP_LOG_DIR/mariadbd.log"
        --init-file="$CP_MYSQL_DIR/init.sql" --innodb-buffer-pool-size=256M
        --innodb-lock-wait-timeout=900)
    if ((foreground)); then exec mariadbd "${args[@]}"; fi
    launch mariadbd "${args[@]}"
    ready 60 db_ok
}

start_slurmdbd() {
    if ((foreground)); then exec slurmdbd -D; fi
    launch slurmdbd
    ready 30 dbd_ok
}

start_slurmctld() {
    if ((foreground)); then exec slurmctld -D -i; fi
    launch slurmctld -i
    ready 30 ctld_ok
}

start_slurmd() {
    if ((foreground)); then exec slurmd -D -N "$node"; fi
    launch slurmd -N "$node"
    log "$name up (pid $(pid_alive "$name"))"
}

"start_$role"
