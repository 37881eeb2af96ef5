#!/usr/bin/env bash
# Entry point of every docker-compose service: the same setup as the native `cluster up`,
# one role a container. Writes the shared configuration (once, under a lock), starts the
# container's own munged where the role needs one, waits for the services the role depends
# on, then runs the role's daemon in the foreground.
#   compose-entry.sh mariadb|slurmdbd|slurmctld|c1|c2
set -euo pipefail
export CP_MODE=compose
# shellcheck source=docker-slurm/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

role="${1:-}"
case "$role" in
mariadb | slurmdbd | slurmctld) ;;
*) node_port "$role" >/dev/null ;; # a node name, else node_port dies with the usage
esac

mkdir -p "$CP_CLUSTER_DIR"
(
    flock 9
    "$CP_LIB_DIR/configure.sh"
) 9>"$CP_CLUSTER_DIR/.configure.lock"

if [[ "$role" == mariadb ]]; then
    exec "$CP_LIB_DIR/daemon.sh" mariadbd --foreground
fi

"$CP_LIB_DIR/daemon.sh" munged

case "$role" in
slurmdbd)
    # Register the cluster, accounts and users once this slurmdbd answers.
    (
        wait_for 300 "slurmdbd" sacctmgr -n show cluster &&
            "$CP_LIB_DIR/register.sh" &&
            touch "$CP_CLUSTER_DIR/.registered"
    ) &
    exec "$CP_LIB_DIR/daemon.sh" slurmdbd --foreground
    ;;
slurmctld)
    wait_for 300 "cluster registration in slurmdbd" test -e "$CP_CLUSTER_DIR/.registered" ||
        die "slurmdbd never registered the cluster"
    # The controller's collector (scheduled, completed, final_state), once slurmctld answers
    (wait_for 300 "slurmctld" sh -c 'scontrol ping | grep -q "is UP"' &&
        "$CP_LIB_DIR/controller.sh" up) &
    exec "$CP_LIB_DIR/daemon.sh" slurmctld --foreground
    ;;
*)
    wait_for 300 "slurmctld" sh -c 'scontrol ping | grep -q "is UP"' ||
        die "slurmctld never answered"
    # This host's own GPU agent, as on a real node (the native cluster runs one per node too)
    "$CP_LIB_DIR/agents.sh" up "$role"
    exec "$CP_LIB_DIR/daemon.sh" slurmd "$role" --foreground
    ;;
esac
