#!/usr/bin/env bash
# Take the large tracked files out of the working tree and the index for the calls of a lent GPU
# (the `device` tool sends the tracked tree with every call, 64 MiB in all, and the bundle, the
# SourceVAE and the docs' audio are about 41 MB of the 50), and put them back afterwards:
#
#   bash scripts/device_slim_tree.sh out     # before the first call; the tree is then ~1.3 MB
#   bash scripts/device_slim_tree.sh in      # after the last one (or if anything fails)
#
# The files wait in $STASH (default ~/.cache/msldm/device-stash). Nothing may be committed in
# between: the index then lacks them. Training needs none of them (scripts/train_denoiser_gpu.sh
# takes its start weights from the packed parts' folders).
set -euo pipefail
cd "$(dirname "$0")/.."
STASH=${STASH:-$HOME/.cache/msldm/device-stash}
PATHS=(msldm/assets/bundle msldm/assets/vae-spectral msldm/assets/example msldm/assets/cpu docs)
case ${1:-} in
out)
    [ ! -e "$STASH/docs" ] || { echo "$STASH already holds a stashed tree: run 'in' first" >&2; exit 1; }
    git diff --quiet HEAD -- "${PATHS[@]}" || { echo "uncommitted changes under ${PATHS[*]}" >&2; exit 1; }
    git rm -r -q --cached "${PATHS[@]}"
    for p in "${PATHS[@]}"; do mkdir -p "$STASH/$(dirname "$p")"; mv "$p" "$STASH/$p"; done ;;
in)
    for p in "${PATHS[@]}"; do [ ! -e "$STASH/$p" ] || mv "$STASH/$p" "$p"; done
    git reset -q -- "${PATHS[@]}" ;;
*)
    echo "usage: $0 out|in" >&2; exit 2 ;;
esac
echo "tracked tree now: $(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1) bytes"
