#!/usr/bin/env bash
# Build a compose cluster image locally, with no registry: a Debian root filesystem from
# mmdebstrap (minbase) holding what lib/packages.sh installs natively, the test users, the
# host's extra CA certificates (pip must reach PyPI through them) and a venv with the
# project's dependencies, then `docker import`. The repository itself is bind-mounted at
# run time, so the image changes only when these inputs do; an image built from the same
# inputs (a digest label) is kept.
#   image.sh DIST [--digest]     --digest: print the inputs' digest, build nothing
#                       DIST: bookworm (Slurm 22.05), trixie (Slurm 24.11),
#                       slurm-25.11 (bookworm + Slurm 25.11 from lib/build-slurm.sh; pyslurm
#                       apart in /opt/pyslurm, on the path only when asked: compose-cluster)
# Needs root, mmdebstrap and a running engine (lib/dockerd.sh).
set -euo pipefail
# shellcheck source=docker-slurm/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

dist="${1:-}"
from_source=0
case "$dist" in
bookworm | trixie) release="$dist" ;;
slurm-25.11)
    release=bookworm
    from_source=1
    ;;
*) die "usage: image.sh bookworm|trixie|slurm-25.11" ;;
esac
image="computeproof-slurm:$dist"
# Bump when this recipe changes what an image holds (the digest below covers its inputs).
IMAGE_RECIPE=2
venv=/opt/computeproof-venv
pkg="$(cd "$CP_LIB_DIR/../.." && pwd)"
slurm_tar="$CP_CACHE_DIR/slurm-$CP_SLURM_SOURCE_VERSION-$release.tar"
wheels="$CP_CACHE_DIR/wheels-$release"

# The project's runtime, gpu, server and postgres requirements and the test runner's (the
# package itself comes bind-mounted): what the cluster's CLI, agents, the slurm-marked
# suite and, with CP_LEDGER=collector, the collector and the forwarders posting to it import.
requirements="$(python3 - "$pkg/pyproject.toml" <<'PY'
import re, sys, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))["project"]
extras = project["optional-dependencies"]
runner = {"pytest", "pytest-timeout", "hypothesis", "pyyaml"}
tests = [r for r in extras["dev"] if re.split(r"[\[<>=!~ ]", r)[0].lower() in runner]
print("\n".join(project["dependencies"] + extras["gpu"] + extras["server"] + extras["postgres"]
                + tests))
PY
)"
digest="$(
    {
        echo "$dist $CP_DEBIAN_MIRROR $requirements"
        echo "recipe $IMAGE_RECIPE"
        CP_SLURM_FROM_SOURCE=$from_source "$CP_LIB_DIR/packages.sh" --list
        echo "${CP_USERS[*]}"
        sed -n '/^ensure_users/,/^}/p' "$CP_LIB_DIR/packages.sh"
        cat /usr/local/share/ca-certificates/*.crt 2>/dev/null || true
        if ((from_source)); then
            sha256sum "$slurm_tar" "$wheels"/pyslurm-"$CP_PYSLURM_VERSION"-*.whl 2>/dev/null || true
        fi
    } | sha256sum | cut -c1-16
)"
if [[ "${2:-}" == --digest ]]; then
    echo "$digest"
    exit 0
fi
if [[ "$(docker image inspect -f '{{index .Config.Labels "computeproof.digest"}}' "$image" 2>/dev/null)" == "$digest" ]]; then
    log "$image is up to date ($digest)"
    exit 0
fi
if ((from_source)); then
    "$CP_LIB_DIR/build-slurm.sh" "$release"
fi

started=$SECONDS
pip_cache="$CP_CACHE_DIR/pip"
mkdir -p "$pip_cache"
setup="$(mktemp -d)"
trap 'rm -rf "$setup"' EXIT
cp "$CP_LIB_DIR/common.sh" "$CP_LIB_DIR/packages.sh" "$setup/"
echo "$requirements" >"$setup/requirements.txt"
mkdir "$setup/ca" && cp /usr/local/share/ca-certificates/*.crt "$setup/ca/" 2>/dev/null || true
if ((from_source)); then
    cp "$slurm_tar" "$setup/slurm.tar"
    cp "$wheels"/pyslurm-"$CP_PYSLURM_VERSION"-*.whl "$setup/"
fi

# In the root filesystem: packages.sh as natively (policy-rc.d: no service starts), the CA
# certificates, Slurm from source where asked, the venv. pip runs with the host's cache.
customize="set -e
    cp -r '$setup' \"\$1/setup\"
    cp /etc/resolv.conf \"\$1/etc/resolv.conf\"
    cp \"\$1\"/setup/ca/*.crt \"\$1/usr/local/share/ca-certificates/\" 2>/dev/null || true
    chroot \"\$1\" update-ca-certificates >/dev/null 2>&1
    chroot \"\$1\" env CP_SLURM_FROM_SOURCE=$from_source /setup/packages.sh
    if [ $from_source = 1 ]; then
        tar -C \"\$1\" -xf \"\$1/setup/slurm.tar\"
        chroot \"\$1\" ldconfig
        mkdir -p \"\$1/etc/slurm\"
    fi
    mkdir -p \"\$1/pipcache\" && mount --bind '$pip_cache' \"\$1/pipcache\"
    chroot \"\$1\" env -i PATH=/usr/bin:/bin HOME=/root PIP_CACHE_DIR=/pipcache \
        PIP_CERT=/etc/ssl/certs/ca-certificates.crt PIP_DISABLE_PIP_VERSION_CHECK=1 sh -ec '
        python3 -m venv $venv
        $venv/bin/pip install -q -r /setup/requirements.txt
        for w in /setup/pyslurm-*.whl; do
            [ -e \"\$w\" ] && $venv/bin/pip install -q --target /opt/pyslurm \"\$w\"
        done
        true'
    umount \"\$1/pipcache\" && rmdir \"\$1/pipcache\"
    rm -rf \"\$1/setup\" \"\$1\"/var/lib/apt/lists/* \"\$1\"/var/cache/apt/*.bin"

log "building $image: Debian $release$( ((from_source)) && echo " + Slurm $CP_SLURM_SOURCE_VERSION from source")"
mmdebstrap --quiet --variant=minbase --include=ca-certificates \
    --customize-hook="$customize" "$release" - "$CP_DEBIAN_MIRROR" |
    docker import \
        --change "ENV PATH=$venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
        --change "ENV CP_MODE=compose" \
        --change "ENV CP_REPO=/computeproof" \
        --change "ENV PYTHONPATH=/computeproof" \
        --change "ENV SLURM_CONF=/var/tmp/computeproof-cluster/etc/slurm.conf" \
        --change "ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt" \
        --change "WORKDIR /computeproof" \
        --change "LABEL computeproof.digest=$digest" \
        - "$image" >/dev/null
log "$image built in $((SECONDS - started))s ($(docker image inspect -f '{{.Size}}' "$image" | numfmt --to=iec))"
