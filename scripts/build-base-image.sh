#!/usr/bin/env bash
# Build the local test/demo base image without any registry:
#   debootstrap (minbase, bookworm) + python3, venv, pip, openssh-server, rsync, ca-certificates,
#   the host's CA bundle at /etc/ssl/certs/launch-host-ca.crt, then `docker import`.
#
# Tags: launch-base:bookworm-<first 12 hex of the sha256 of this script's recipe text, i.e.
# the file without comment/blank lines> and launch-base:local. Changing the recipe gives a new
# tag; an existing tag is reused as is (launch-base:local is pointed at it).
# Progress goes to stderr; the tag is the LAST line on stdout (callers capture it).
#
# Environment: LAUNCH_CACHE (default ~/.cache/launch) holds the temporary rootfs and the log;
# LAUNCH_DEBIAN_MIRROR (default http://deb.debian.org/debian).
set -euo pipefail

self="$(readlink -f "${BASH_SOURCE[0]}")"
here="$(dirname "$self")"
repo="launch-base"
suite="bookworm"
packages="python3,python3-venv,python3-pip,openssh-server,rsync,ca-certificates"
mirror="${LAUNCH_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
host_ca="/etc/ssl/certs/ca-certificates.crt"
image_ca="/etc/ssl/certs/launch-host-ca.crt"

cache="${LAUNCH_CACHE:-$HOME/.cache/launch}"
rootfs="$cache/base-rootfs"
logfile="$cache/base-image.log"

say() { echo "› $*" >&2; }
die() { echo "build-base-image: $*" >&2; exit 1; }

# The recipe is this file less its comment and blank lines: editing a comment keeps the tag.
hash="$(grep -v '^[[:space:]]*#' "$self" | grep -v '^[[:space:]]*$' | sha256sum | cut -c1-12)"
tag="$repo:$suite-$hash"
local_tag="$repo:local"

# The engine must answer; start it if we can (fast no-op when it is up).
if [ -x "$here/ensure-docker.sh" ]; then
  "$here/ensure-docker.sh" || die "no docker engine (see above)"
elif ! docker info >/dev/null 2>&1; then
  die "no docker engine answers 'docker info'"
fi

image_id() { docker image inspect --format '{{.Id}}' "$1" 2>/dev/null || true; }

reuse() {
  local id
  id="$(image_id "$tag")"
  [ -n "$id" ] || return 1
  if [ "$(image_id "$local_tag")" != "$id" ]; then
    docker tag "$tag" "$local_tag"
  fi
  say "base image $tag is up to date"
  echo "$tag"
  exit 0
}

reuse || true

mkdir -p "$cache"
# One build at a time per cache dir; a concurrent second run reuses the first one's image.
if command -v flock >/dev/null 2>&1; then
  exec 9>"$cache/base-image.lock"
  flock -w 900 9 || die "timed out waiting for another build (lock $cache/base-image.lock)"
  reuse || true
fi

[ "$EUID" -eq 0 ] || die "building $tag needs root (debootstrap); run it with sudo once"

if ! command -v debootstrap >/dev/null 2>&1; then
  command -v apt-get >/dev/null 2>&1 || die "debootstrap is missing and apt-get is not available"
  say "installing debootstrap (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
fi

# Leftovers of an interrupted build: unmount whatever debootstrap left mounted, then remove.
cleanup_rootfs() {
  [ -e "$rootfs" ] || return 0
  local mounts
  mounts="$(awk -v r="$rootfs" 'index($2, r) == 1 { print $2 }' /proc/mounts | sort -r)"
  if [ -n "$mounts" ]; then
    while IFS= read -r m; do umount -l "$m" 2>/dev/null || true; done <<<"$mounts"
  fi
  rm -rf --one-file-system "$rootfs"
}
cleanup_rootfs
trap cleanup_rootfs EXIT

start=$SECONDS
say "debootstrap $suite (minbase) into $rootfs (log: $logfile)"
if ! debootstrap --variant=minbase --include="$packages" "$suite" "$rootfs" "$mirror" \
  >"$logfile" 2>&1; then
  tail -n 20 "$logfile" >&2 || true
  die "debootstrap failed (full log: $logfile)"
fi
say "debootstrap done in $((SECONDS - start))s"

# Slim it down: no downloaded .debs, apt lists, docs, man pages or caches; keep later
# `apt-get install` runs in derived images doc-free too.
mkdir -p "$rootfs/etc/dpkg/dpkg.cfg.d"
cat >"$rootfs/etc/dpkg/dpkg.cfg.d/01-launch-nodoc" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
EOF
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin \
  "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
  "$rootfs"/var/log/*.log "$rootfs"/var/log/apt/* "$rootfs"/root/.cache
find "$rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete 2>/dev/null || true
mkdir -p "$rootfs/run/sshd"

# HTTPS inside containers trusts what the host trusts (the network here may re-sign TLS).
if [ -s "$host_ca" ]; then
  cp "$host_ca" "$rootfs$image_ca"
else
  say "warning: $host_ca not found; using the image's own CA bundle"
  cp "$rootfs/etc/ssl/certs/ca-certificates.crt" "$rootfs$image_ca"
fi
chmod 0644 "$rootfs$image_ca"

say "docker import -> $tag"
tar --numeric-owner -C "$rootfs" -c . | docker import \
  --change "ENV SSL_CERT_FILE=$image_ca" \
  --change "ENV PIP_CERT=$image_ca" \
  --change "ENV REQUESTS_CA_BUNDLE=$image_ca" \
  --change 'ENV PIP_BREAK_SYSTEM_PACKAGES=1' \
  --change 'CMD ["python3"]' \
  --message "launch base image ($suite minbase, recipe $hash)" \
  - "$tag" >/dev/null
docker tag "$tag" "$local_tag"

cleanup_rootfs
trap - EXIT
say "built $tag (also $local_tag) in $((SECONDS - start))s"
echo "$tag"
