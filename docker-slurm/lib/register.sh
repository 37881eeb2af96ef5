#!/usr/bin/env bash
# Register the cluster, its accounts and users in slurmdbd (idempotent). Runs once slurmdbd
# answers and before slurmctld starts, so slurmctld loads every association at start.
set -euo pipefail
# shellcheck source=docker-slurm/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# has KIND NAME [WHERE...]: whether sacctmgr already knows NAME.
has() {
    local kind="$1" name="$2"
    shift 2
    sacctmgr -n -P show "$kind" "$name" "$@" format="$kind" 2>/dev/null | grep -qx "$name"
}

# Users are matched by name only when asked with withassoc; show the user's accounts instead.
user_accounts() {
    sacctmgr -n -P show association cluster="$CP_CLUSTER_NAME" user="$1" format=account 2>/dev/null
}

add() {
    local out
    if ! out="$(sacctmgr -i add "$@" 2>&1)"; then
        # sacctmgr exits 1 with this message when everything asked for already exists.
        [[ "$out" == *"Nothing new added"* ]] || die "sacctmgr add $*: $out"
    fi
}

if ! has cluster "$CP_CLUSTER_NAME"; then
    log "registering cluster $CP_CLUSTER_NAME in slurmdbd"
    add cluster "$CP_CLUSTER_NAME"
fi

for account in "${CP_ACCOUNTS[@]}"; do
    if ! has account "$account"; then
        log "adding account $account"
        add account "$account" cluster="$CP_CLUSTER_NAME" description="$account" \
            organization=computeproof-test
    fi
done

# link USER ACCOUNT [DEFAULT]: associate USER with ACCOUNT (creating the user if needed).
link() {
    local user="$1" account="$2" default="${3:-}" have
    have="$(user_accounts "$user")"
    if grep -qx "$account" <<<"$have"; then
        return 0
    fi
    log "associating user $user with account $account"
    if [[ -n "$default" ]]; then
        add user "$user" account="$account" defaultaccount="$default" cluster="$CP_CLUSTER_NAME"
    else
        add user "$user" account="$account" cluster="$CP_CLUSTER_NAME"
    fi
}

for entry in "${CP_USERS[@]}"; do
    IFS=: read -r user default others <<<"$entry"
    link "$user" "$default" "$default"
    IFS=, read -r -a extra <<<"$others"
    for account in "${extra[@]}"; do
        if [[ -n "$account" ]]; then link "$user" "$account"; fi
    done
done
# root keeps its default account (root) and may submit under every test account.
for account in "${CP_ACCOUNTS[@]}"; do
    link root "$account"
done
