#!/usr/bin/env bash
# Makes this machine ready, idempotently: Debian packages, a Docker engine (loopback only: no
# bridge, no iptables), the offline PostgreSQL 15 test image. Every step is skipped when already
# done, so `npm test` and `npm run demo` run it first every time. Installing needs root.
# Usage: setup.sh          everything the tests and the demo need
#        setup.sh build    only what `npm run build` needs (binutils, the arm64 cross libraries, qemu)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
mode=${1:-all}
case "$mode" in all | build) ;; *) echo "usage: $0 [build]" >&2; exit 2 ;; esac

# build.mjs: strip/readelf for both architectures, the arm64 C runtime it ships, and qemu to run
# the arm64 Node that writes the arm64 code cache (and runs the arm64 tests).
packages=(binutils binutils-aarch64-linux-gnu libc6-arm64-cross libstdc++6-arm64-cross libgcc-s1-arm64-cross qemu-user)
if [ "$mode" = all ]; then
  packages+=(docker.io docker-compose debootstrap openssh-server cron busybox-static age)
fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "setup: missing Debian packages ${missing[*]}; run 'bash test/env/setup.sh${1:+ $1}' as root" >&2
    exit 1
  fi
  echo "setup: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
[ "$mode" = build ] && { echo "setup: build tools ready"; exit 0; }

if ! docker info >/dev/null 2>&1; then
  echo "test bed: starting dockerd (--bridge=none --iptables=false)"
  # Only loopback traffic is allowed here: no bridge network, no NAT rules.
  nohup dockerd --bridge=none --iptables=false >/var/log/dockerd-planetarion.log 2>&1 &
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { echo "dockerd did not start; see /var/log/dockerd-planetarion.log" >&2; exit 1; }
fi

"$here/pg-image/build-image.sh"
echo "test bed: ready"
