#!/usr/bin/env bash
# Create .venv and install launch into it (editable), once per change of pyproject.toml.
# Usage: scripts/setup-venv.sh [EXTRAS]   e.g. "dev" or "docker"
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-docker}"
py="${PYTHON:-python3}"
if ! "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "launch needs Python >= 3.11 (found: $("$py" --version 2>&1)); set PYTHON=/path/to/python3.11" >&2
  exit 1
fi
[ -x .venv/bin/python ] || "$py" -m venv .venv
stamp=".venv/.launch-installed-$extras-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -e "$stamp" ]; then
  echo "› installing launch[$extras] into .venv" >&2
  log="$(mktemp)"
  if ! .venv/bin/python -m pip install -q --disable-pip-version-check -e ".[$extras]" >"$log" 2>&1; then
    cat "$log" >&2
    exit 1
  fi
  rm -f "$log"
  touch "$stamp"
fi
