#!/usr/bin/env bash
# Install the Debian packages the test cluster needs, and its unix users, when missing.
# Run by `cluster up` natively and by lib/image.sh in the compose images' root filesystem.
#   packages.sh [--list]     --list: print the package names and install nothing
set -euo pipefail
# shellcheck source=docker-slurm/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# gcc and libc6-dev (pthread.h; gcc only recommends it) build the fake NVML library the
# agents read; python3-venv makes the virtual environment the CLI runs from (Debian's
# python3 is externally managed, PEP 668: no pip install into it).
# postgresql: the collector's database (CP_LEDGER=collector, scripts/collector).
CP_PACKAGES=(munge mariadb-server mariadb-client python3 python3-venv procps gcc libc6-dev
    postgresql)
if [[ "${CP_SLURM_FROM_SOURCE:-0}" == 1 ]]; then
    # Slurm built from source (lib/build-slurm.sh) brings its own binaries: only the
    # libraries it links against
    CP_PACKAGES+=(libjson-c5 libhwloc15 liblz4-1 libpam0g libmariadb3)
else
    CP_PACKAGES+=(slurmctld slurmd slurm-client slurmdbd slurm-wlm-mysql-plugin)
fi

ensure_packages() {
    local missing=() pkg
    for pkg in "${CP_PACKAGES[@]}"; do
        if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed'; then
            missing+=("$pkg")
        fi
    done
    if ((${#missing[@]} == 0)); then
        return 0
    fi
    [[ $EUID -eq 0 ]] || die "packages missing (${missing[*]}) and not root: install them first"
    command -v apt-get >/dev/null || die "packages missing (${missing[*]}) and no apt-get here"
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # Debian's postinst would start munge/mariadb through systemd or init scripts; there is
    # none here and we run our own private daemons, so forbid service starts while installing.
    local policy=/usr/sbin/policy-rc.d created_policy=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        created_policy=1
    fi
    local rc=0
    apt-get install -y -qq --no-install-recommends "${missing[@]}" || rc=$?
    ((created_policy)) && rm -f "$policy"
    ((rc == 0)) || die "apt-get install failed (exit $rc)"
}

ensure_users() {
    local entry user
    for entry in "${CP_USERS[@]}"; do
        user="${entry%%:*}"
        if ! getent passwd "$user" >/dev/null; then
            log "creating unix user $user"
            useradd --create-home --shell /bin/bash "$user"
        fi
    done
}

if [[ "${1:-}" == --list ]]; then
    echo "${CP_PACKAGES[@]}"
    exit 0
fi
ensure_packages
ensure_users
