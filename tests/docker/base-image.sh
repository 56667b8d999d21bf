#!/usr/bin/env bash
# Builds the Debian base image the Docker tests run Shoal in, from Debian's own
# packages: no registry is needed (this machine can pull no images).
#   debootstrap --variant=minbase bookworm  ->  docker import  ->  $SHOAL_BASE_IMAGE
# Does nothing if the image exists. Needs root (debootstrap) and a Docker engine.
set -euo pipefail
IMAGE=${SHOAL_BASE_IMAGE:-shoal-base:bookworm}
if docker image inspect "$IMAGE" > /dev/null 2>&1; then
  exit 0
fi
# Tests run in parallel and each may call this script: one builds, the others wait
# for it and then find the image.
exec 9> "${TMPDIR:-/tmp}/shoal-base-image.lock"
flock 9
if docker image inspect "$IMAGE" > /dev/null 2>&1; then
  exit 0
fi
if ! command -v debootstrap > /dev/null; then
  # Wait for dpkg's lock rather than fail if another apt is running.
  apt-get -o DPkg::Lock::Timeout=600 update -q > /dev/null
  apt-get -o DPkg::Lock::Timeout=600 install -y -q debootstrap > /dev/null
fi
mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2> /dev/null || true)
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase bookworm "$root" "${mirror:-http://deb.debian.org/debian}" > "$root.log" 2>&1 \
  || { tail -20 "$root.log"; exit 1; }
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tar -C "$root" -c . | docker import - "$IMAGE" > /dev/null
echo "built $IMAGE"
