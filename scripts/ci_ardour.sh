#!/usr/bin/env bash
# CI job for the DAW adapters: make sure headless Ardour 7 is there (installing it with
# apt if allowed), then run the Ardour and REAPER adapter tests and the bridge tests.
# Unlike a plain `pytest`, this fails (instead of skipping) when ardour7-lua is missing.
#   bash scripts/ci_ardour.sh            # uses .venv/bin/python, else python3
#   PYTHON=/path/to/python bash scripts/ci_ardour.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
if ! command -v ardour7-lua >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "ardour7-lua missing: installing the ardour package (about 160 MB download)"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq ardour >/dev/null
fi
command -v ardour7-lua >/dev/null || { echo "ardour7-lua still missing" >&2; exit 1; }
export XDG_CONFIG_HOME="$(mktemp -d)"   # keep Ardour's config out of the home folder
trap 'rm -rf "$XDG_CONFIG_HOME"' EXIT
exec "$PY" -m pytest -q tests/test_daw_ardour.py tests/test_daw_reaper.py tests/test_bridge_client.py \
  tests/test_bridge_cli.py tests/test_bridge_wavio.py
