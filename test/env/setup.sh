#!/usr/bin/env bash
# Makes this machine ready for the test suite, idempotently: Debian packages, a Docker
# engine (loopback only: no bridge, no iptables), the offline PostgreSQL 15 test image.
# Run as root. Every step is skipped when already done.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

packages=(docker.io docker-compose debootstrap openssh-server cron busybox-static qemu-user
  libc6-arm64-cross libstdc++6-arm64-cross libgcc-s1-arm64-cross binutils-aarch64-linux-gnu age)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "test bed: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! docker info >/dev/null 2>&1; then
  echo "test bed: starting dockerd (--bridge=none --iptables=false)"
  # Only loopback traffic is allowed here: no bridge network, no NAT rules.
  nohup dockerd --bridge=none --iptables=false >/var/log/dockerd-planetarion.log 2>&1 &
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { echo "dockerd did not start; see /var/log/dockerd-planetarion.log" >&2; exit 1; }
fi

"$here/pg-image/build-image.sh"
echo "test bed: ready"
