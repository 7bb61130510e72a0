#!/usr/bin/env bash
# Make sure a docker engine answers `docker info`.
#
#   - already answering: exit 0 at once;
#   - root with apt-get: install docker.io if dockerd is missing, start dockerd detached
#     (log: ${TMPDIR:-/tmp}/launch-dockerd.log) and wait up to 60 s for it;
#   - otherwise: print what to do and exit 1.
#
# Idempotent and safe to run concurrently (the slow path holds a lock file).
set -euo pipefail

tmp="${TMPDIR:-/tmp}"
log="$tmp/launch-dockerd.log"
lock="$tmp/launch-ensure-docker.lock"
wait_s=60

say() { echo "› $*" >&2; }

engine_up() {
  command -v docker >/dev/null 2>&1 || return 1
  if command -v timeout >/dev/null 2>&1; then
    timeout 15 docker info >/dev/null 2>&1
  else
    docker info >/dev/null 2>&1
  fi
}

# Fast path.
if engine_up; then
  exit 0
fi

if [ "$EUID" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  why="$(docker info 2>&1 >/dev/null || true)"
  if [[ "$why" == *"permission denied"* ]]; then
    echo "docker engine is running but not reachable by $(id -un): add yourself to the 'docker' group" \
      "(sudo usermod -aG docker $(id -un), then log in again) or run as root." >&2
  else
    echo "no docker engine answers 'docker info': install Docker and start it" \
      "(e.g. 'sudo systemctl start docker'), or run scripts/ensure-docker.sh as root on Debian/Ubuntu." >&2
  fi
  exit 1
fi

# Slow path: one runner at a time; a concurrent second run waits, then finds the engine up.
if command -v flock >/dev/null 2>&1; then
  exec 9>"$lock"
  if ! flock -w 300 9; then
    echo "timed out waiting for another ensure-docker.sh (lock $lock)" >&2
    exit 1
  fi
  if engine_up; then
    exit 0
  fi
fi

if ! command -v dockerd >/dev/null 2>&1 || ! command -v docker >/dev/null 2>&1; then
  say "installing docker.io (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends docker.io >/dev/null
fi

dockerd_running() {
  local pidfile=/var/run/docker.pid pid
  [ -s "$pidfile" ] || return 1
  pid="$(cat "$pidfile" 2>/dev/null || true)"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

if dockerd_running; then
  say "dockerd is already starting (pid $(cat /var/run/docker.pid)); waiting for it"
else
  say "starting dockerd (log: $log)"
  setsid dockerd >"$log" 2>&1 </dev/null 9>&- &
fi

deadline=$((SECONDS + wait_s))
while [ "$SECONDS" -lt "$deadline" ]; do
  if engine_up; then
    say "docker engine is up"
    exit 0
  fi
  sleep 0.5
done

echo "dockerd did not answer within ${wait_s}s; last lines of $log:" >&2
tail -n 20 "$log" >&2 2>/dev/null || true
exit 1
