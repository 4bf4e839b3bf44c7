#!/bin/sh
# Builds the PostgreSQL 15 test image offline: Debian's packages through debootstrap,
# then `docker import` (no registry image can be pulled here). The tag carries a hash of
# this recipe, so the image is rebuilt only when the recipe changes.
# Usage: build-image.sh [IMAGE_NAME]   (default planetarion-test-pg)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
name=${1:-planetarion-test-pg}
recipe=$(cat "$here/build-image.sh" "$here/entrypoint.sh" | sha256sum | cut -c1-12)
if docker image inspect "$name:$recipe" >/dev/null 2>&1; then
  docker tag "$name:$recipe" "$name:latest"
  echo "image $name:$recipe is current"
  exit 0
fi
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
rootfs=$(mktemp -d /var/tmp/pg-rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
echo "building $name:$recipe (debootstrap, about 2 minutes)"
debootstrap --variant=minbase --include=postgresql-15 bookworm "$rootfs" "$mirror" >/dev/null
# The packaged cluster is not used: the entrypoint runs initdb itself, like the official image.
chroot "$rootfs" sh -c 'pg_dropcluster 15 main 2>/dev/null || true; apt-get clean; rm -rf /var/lib/apt/lists/*'
install -m 0755 "$here/entrypoint.sh" "$rootfs/usr/local/bin/docker-entrypoint.sh"
tar -C "$rootfs" -c . | docker import \
  -c 'ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  -c 'ENV PGDATA=/var/lib/postgresql/data' \
  -c 'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]' \
  -c 'HEALTHCHECK --interval=1s --timeout=5s --start-period=60s --retries=3 CMD pg_isready -q -h /var/run/postgresql -U "${POSTGRES_USER:-postgres}" -d "${POSTGRES_DB:-postgres}"' \
  -c "LABEL planetarion.recipe=$recipe" \
  - "$name:$recipe-rootfs" >/dev/null
# Like the official image, `docker stop` sends SIGINT, PostgreSQL's fast shutdown: sessions are
# ended, not waited for (Docker's default SIGTERM is a smart shutdown, which lets a running dump
# finish). `docker import` takes no STOPSIGNAL; a build from the local image needs no registry.
printf 'FROM %s\nSTOPSIGNAL SIGINT\n' "$name:$recipe-rootfs" | DOCKER_BUILDKIT=0 docker build -q -t "$name:$recipe" - >/dev/null
docker rmi "$name:$recipe-rootfs" >/dev/null
docker tag "$name:$recipe" "$name:latest"
echo "built $name:$recipe"
