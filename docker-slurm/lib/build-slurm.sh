#!/usr/bin/env bash
# Build Slurm from SchedMD's source (the vendored tarball beside the repository, never in
# it) and pyslurm against it, in a Debian root filesystem of the image's release, so the
# result runs in the compose image built from the same release. The results are cached by
# version and release under $CP_CACHE_DIR; a rerun with both files present does nothing.
#   build-slurm.sh [DIST]       DIST: bookworm (default) or trixie
# Writes $CP_CACHE_DIR/slurm-$VERSION-$DIST.tar (the installed tree: prefix /usr, config in
# /etc/slurm) and $CP_CACHE_DIR/wheels-$DIST/pyslurm-*.whl. Exit 3 when the tarball is absent.
set -euo pipefail
# shellcheck source=docker-slurm/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

dist="${1:-bookworm}"
version="$CP_SLURM_SOURCE_VERSION"
tarball="$CP_SLURM_SOURCE_TARBALL"
out="$CP_CACHE_DIR/slurm-$version-$dist.tar"
wheels="$CP_CACHE_DIR/wheels-$dist"

if [[ -s "$out" ]] && compgen -G "$wheels/pyslurm-$CP_PYSLURM_VERSION-*.whl" >/dev/null; then
    log "Slurm $version and pyslurm $CP_PYSLURM_VERSION for $dist already built ($out)"
    exit 0
fi
if [[ ! -s "$tarball" ]]; then
    warn "no Slurm source at $tarball: skipping the Slurm $version build (shared/vendor/ holds it)"
    exit 3
fi
[[ $EUID -eq 0 ]] || die "building in a chroot needs root"
command -v mmdebstrap >/dev/null || die "mmdebstrap not found: apt-get install mmdebstrap"

BUILD_DEPS=(gcc make pkg-config libc6-dev python3 python3-dev python3-venv ca-certificates
    libmunge-dev libjson-c-dev libpam0g-dev libreadline-dev liblz4-dev libhwloc-dev
    libmariadb-dev libmariadb-dev-compat xz-utils)
root="$CP_CACHE_DIR/build-root-$dist"
mkdir -p "$CP_CACHE_DIR" "$wheels"
rm -rf "$root"
started=$SECONDS
log "build root: Debian $dist with the build dependencies ($root)"
mmdebstrap --quiet --variant=minbase --include="$(IFS=,; echo "${BUILD_DEPS[*]}")" \
    "$dist" "$root" "$CP_DEBIAN_MIRROR"
cleanup() {
    umount "$root/proc" 2>/dev/null || true
    rm -rf "$root"
}
trap cleanup EXIT
mount -t proc proc "$root/proc"
cp /etc/resolv.conf "$root/etc/resolv.conf"
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
    chroot "$root" update-ca-certificates >/dev/null
fi
cp "$tarball" "$root/slurm.tar.xz"

if [[ ! -s "$out" ]]; then
    log "building Slurm $version (configure, make -j$(nproc), install; a few minutes)"
    chroot "$root" /bin/sh -ec "
        mkdir /src && tar -C /src --strip-components=1 -xJf /slurm.tar.xz && cd /src
        ./configure --quiet --prefix=/usr --libdir=/usr/lib --sysconfdir=/etc/slurm \
            --disable-debug >/configure.log 2>&1 || { tail -n 40 /configure.log; exit 1; }
        make -j$(nproc) >/make.log 2>&1 || { tail -n 60 /make.log; exit 1; }
        make install DESTDIR=/staging >/install.log 2>&1 || { tail -n 40 /install.log; exit 1; }
    "
    tar -C "$root/staging" -cf "$out.tmp" .
    mv "$out.tmp" "$out"
    log "Slurm $version built in $((SECONDS - started))s: $out"
else
    tar -C "$root" -xf "$out"
    mkdir -p "$root/staging"
fi
# pyslurm links against the installed libslurm: install the tree into the build root too
tar -C "$root" -xf "$out"
log "building pyslurm $CP_PYSLURM_VERSION against it"
chroot "$root" env -i PATH=/usr/bin:/bin HOME=/root PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    PIP_DISABLE_PIP_VERSION_CHECK=1 SLURM_INCLUDE_DIR=/usr/include SLURM_LIB_DIR=/usr/lib \
    /bin/sh -ec "
        python3 -m venv /venv
        /venv/bin/pip wheel -q --no-deps -w /wheels 'pyslurm==$CP_PYSLURM_VERSION' >/pyslurm.log 2>&1 ||
            { tail -n 60 /pyslurm.log; exit 1; }
    "
cp "$root"/wheels/pyslurm-*.whl "$wheels/"
log "Slurm $version + pyslurm $CP_PYSLURM_VERSION for $dist ready in $((SECONDS - started))s"
