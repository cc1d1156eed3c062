#!/usr/bin/env bash
# Gather what the synthetic corpus needs on a GPU machine that has no FluidSynth and no
# network: libfluidsynth and the shared libraries it loads (not glibc's), plus the small
# TimGM6mb General MIDI soundfont (6 MB; FluidR3_GM.sf2 is 148 MB, too big to carry).
# Writes build/device/{lib,sf2}; about 30 MB. On the GPU machine:
#   LD_LIBRARY_PATH=build/device/lib msldm data synth --soundfont build/device/sf2/TimGM6mb.sf2 ...
set -euo pipefail
cd "$(dirname "$0")/.."
out=build/device
rm -rf "$out" && mkdir -p "$out/lib" "$out/sf2"
lib=$(ldconfig -p | awk '/libfluidsynth\.so\.3 /{print $NF; exit}')
[ -n "$lib" ] || { echo "libfluidsynth3 is not installed here (apt-get install libfluidsynth3)" >&2; exit 1; }
cp -L "$lib" "$out/lib/"
ldd "$lib" | awk '$3 ~ /^\// {print $3}' \
  | grep -v -E '/(libc|libm|libpthread|libdl|librt|ld-linux[^/]*)\.so' \
  | while read -r dep; do cp -L "$dep" "$out/lib/"; done
cp /usr/share/sounds/sf2/TimGM6mb.sf2 "$out/sf2/"
du -sh "$out"
