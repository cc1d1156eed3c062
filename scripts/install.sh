#!/usr/bin/env bash
# Set up a fresh Debian/Ubuntu machine: system packages, a virtual environment in .venv,
# the CPU build of PyTorch pinned first (so nothing pulls CUDA packages), then msldm.
#   bash scripts/install.sh          # what the main job needs
#   bash scripts/install.sh --test   # plus what the test suite needs (FluidSynth, liblo, Ardour)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
pkgs=(libfluidsynth3 fluid-soundfont-gm)
[ "${1:-}" = "--test" ] && pkgs+=(timgm6mb-soundfont liblo-tools ardour)
command -v "$PY" >/dev/null || pkgs+=(python3)
"$PY" -c "import ensurepip, venv" 2>/dev/null || pkgs+=(python3-venv)  # Debian's python3 lacks it
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "installing system packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/pip install -q --upgrade pip >/dev/null
.venv/bin/pip install -q "torch==2.13.0"
.venv/bin/pip install -q -e ".[all]"
# Basic Pitch's note-transcription model (nmp.onnx) for the evaluation: the wheel alone, since its
# declared dependencies pin tensorflow; what our code uses of it is in the `eval` extra.
.venv/bin/pip install -q --no-deps "basic-pitch==0.4.0"
echo "installed: $(.venv/bin/python -c 'import msldm, torch; print("msldm", msldm.__version__, "torch", torch.__version__)')"
