#!/usr/bin/env bash
# Builds a PostgreSQL image from Debian packages, for machines that cannot pull from a container
# registry (air-gapped CI). The image honours the official image's environment contract, so the test
# harness and `ops/run` use it exactly like `postgres:15-bookworm` from Docker Hub.
#
# Usage: ops/postgres-image/build.sh [--force]
#   DEMO_POSTGRES_IMAGE  image name to build (default postgres:15-bookworm)
#   DEBIAN_MIRROR        Debian mirror to bootstrap from (default: the first one in this machine's apt sources)
#
# Does nothing when the image already exists, unless --force is given. Needs root (debootstrap, chroot)
# and installs debootstrap with apt-get when it is missing.
set -euo pipefail

image="${DEMO_POSTGRES_IMAGE:-postgres:15-bookworm}"
suite=bookworm
postgres_major=15
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

log() { printf 'postgres-image: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

if [[ "${1:-}" != "--force" ]] && docker image inspect "$image" >/dev/null 2>&1; then
    log "$image is present; nothing to build"
    exit 0
fi

[[ $(id -u) -eq 0 ]] || die "building the image needs root (debootstrap and chroot); run it with sudo"
docker info >/dev/null 2>&1 || die "Docker is not reachable; start the Docker daemon and try again"

# One build at a time on this machine: a second caller waits, then finds the image built.
exec 9>/tmp/demo-postgres-image.lock
flock 9
if [[ "${1:-}" != "--force" ]] && docker image inspect "$image" >/dev/null 2>&1; then
    log "$image was built by a concurrent run"
    exit 0
fi

if ! command -v debootstrap >/dev/null; then
    log "installing debootstrap"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi

mirror_from_apt_sources() {
    # deb822 sources first (Debian 12 and later), then the one-line format.
    local uri
    uri=$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -v security | head -n1 || true)
    if [[ -z "$uri" ]]; then
        uri=$(grep -hs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list | awk '{print $2}' | grep -v security | head -n1 || true)
    fi
    printf '%s' "$uri"
}
mirror="${DEBIAN_MIRROR:-$(mirror_from_apt_sources)}"
[[ -n "$mirror" ]] || die "no Debian mirror found in /etc/apt/sources*; set DEBIAN_MIRROR"

rootfs="$(mktemp -d /tmp/demo-postgres-rootfs.XXXXXX)"
trap 'rm -rf "$rootfs"' EXIT

log "bootstrapping Debian $suite with postgresql-$postgres_major from $mirror (takes a minute or two)"
debootstrap --variant=minbase --include="postgresql-$postgres_major" "$suite" "$rootfs" "$mirror" >"$rootfs.log" 2>&1 \
    || { tail -n 30 "$rootfs.log" >&2; rm -f "$rootfs.log"; die "debootstrap failed"; }
rm -f "$rootfs.log"

log "preparing the root filesystem"
# The Debian package creates a cluster of its own; the entrypoint creates one in PGDATA instead.
rm -rf "$rootfs/var/lib/postgresql/$postgres_major" "$rootfs/etc/postgresql/$postgres_major"
rm -rf "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/var/cache/apt/* "$rootfs"/var/lib/apt/lists/*
install -m 0755 "$here/docker-entrypoint.sh" "$rootfs/usr/local/bin/docker-entrypoint.sh"
# var/run is an absolute symlink to /run inside the rootfs, so these go through chroot.
chroot "$rootfs" /bin/sh -c '
    set -e
    mkdir -p /var/lib/postgresql/data /run/postgresql /docker-entrypoint-initdb.d
    chown -R postgres:postgres /var/lib/postgresql /run/postgresql
    chmod 0700 /var/lib/postgresql/data
    chmod 2777 /run/postgresql
'

log "importing $image"
tar --numeric-owner -C "$rootfs" -c . | docker import \
    -c 'ENTRYPOINT ["docker-entrypoint.sh"]' \
    -c 'CMD ["postgres"]' \
    -c 'EXPOSE 5432' \
    -c 'USER postgres' \
    -c 'WORKDIR /var/lib/postgresql' \
    -c 'ENV PGDATA=/var/lib/postgresql/data' \
    -c 'ENV LANG=C.UTF-8' \
    -c "ENV PATH=/usr/lib/postgresql/$postgres_major/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    -c 'LABEL org.opencontainers.image.description="PostgreSQL built from Debian packages by ops/postgres-image/build.sh"' \
    - "$image" >/dev/null
log "built $image ($(docker image inspect --format '{{.Size}}' "$image" | awk '{printf "%d MB", $1/1000000}'))"
