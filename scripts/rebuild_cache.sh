#!/usr/bin/env bash
# Rebuild this machine's data cache (~/.cache/msldm/data) after a wipe, with the documented
# commands (docs/data.md), stage by stage, each resumable (`--resume`; a finished stage is
# skipped when its marker file exists). Every corpus is a pure function of its command, so
# the rebuilt data are the ones the evaluations and runs in docs/ were measured on.
#
#   bash scripts/rebuild_cache.sh eval        # test + validation of the 10-hour corpus, the held-out composer (~1.5 min)
#   bash scripts/rebuild_cache.sh train       # the training splits: 10-hour corpus, three plays-through draws
#   bash scripts/rebuild_cache.sh latents     # their latents by the bundled SourceVAE, joined as mix6-latents
#   bash scripts/rebuild_cache.sh all         # all three, in that order
#   VAE=new.safetensors TAG=-v2 bash scripts/rebuild_cache.sh relatents
#                                             # latents of every training corpus by another SourceVAE,
#                                             # into <corpus>-latents-v2 and mix6-latents-v2: each
#                                             # plays-through corpus is rendered again (if its audio
#                                             # is gone), encoded, and its audio deleted before the
#                                             # next, so the disk holds one at a time
#
# WORKERS (default 2) sets the render processes; run it under nice beside other work.
# Disk: the training corpora take about 10 GB of audio each and their latents 1-2 GB each; this
# machine has had 35-40 GB free, so `all` does not fit with every corpus's audio kept.
# PRUNE_AUDIO=1 deletes a training split's audio once its latents are made (training reads
# only the latents; the audio is remade by `train` after removing the corpus's .done marker).
# A stage that would start with less than MIN_FREE_GB free (default 12 before a render, about
# one corpus; 4 before latents) stops with a message instead of dying mid-write (2026-12-05: a
# full disk killed a render and two extractions). Latents are made for the plays-through
# corpora first, so that with PRUNE_AUDIO=1 each frees its 10 GB before the next.
set -euo pipefail
cd "$(dirname "$0")/.."
MSLDM=${MSLDM:-.venv/bin/msldm}
PY=${PY:-.venv/bin/python}
DATA=${DATA:-$HOME/.cache/msldm/data}
WORKERS=${WORKERS:-2}
VAE=${VAE:-msldm/assets/vae-spectral/vae.safetensors}
TAG=${TAG:-}  # suffix of latent folders and their markers (relatents with another VAE)
STATS=${STATS:-msldm/assets/cpu/diffusion.safetensors}  # mix6's normalisation: the shipped denoiser's
GM=/usr/share/sounds/sf2/FluidR3_GM.sf2
MONO=/usr/share/sounds/sf3/FluidR3Mono_GM.sf3
TIM=/usr/share/sounds/sf2/TimGM6mb.sf2
for f in "$GM" "$MONO" "$TIM"; do
    [ -f "$f" ] || { echo "missing soundfont $f: apt-get install fluid-soundfont-gm fluidr3mono-gm-soundfont timgm6mb-soundfont" >&2; exit 2; }
done
mkdir -p "$DATA"

MIN_FREE_GB=${MIN_FREE_GB:-}
PRUNE_AUDIO=${PRUNE_AUDIO:-0}

done_mark() { [ -f "$DATA/.done-$1" ]; }
need_space() {  # need_space NAME: stop unless enough GB are free where the data live
    local free need=${MIN_FREE_GB:-$STAGE_GB}
    free=$(df -Pk "$DATA" | awk 'NR==2 {print int($4 / 1048576)}')
    if [ "$free" -lt "$need" ]; then
        echo "[rebuild] $1: only $free GB free in $DATA (needs $need; MIN_FREE_GB overrides); free some space" \
             "(PRUNE_AUDIO=1 drops training audio once its latents exist) and run again" >&2
        exit 3
    fi
}
mark() { touch "$DATA/.done-$1"; }
step() {  # step NAME command...: run unless done, then mark
    local name=$1; shift
    if done_mark "$name"; then echo "[rebuild] $name: done before"; return; fi
    need_space "$name"
    echo "[rebuild] $name: $(date +%T)"
    "$@"
    mark "$name"
}
synth() {  # synth OUT SEED TRACKS SPLITS [composer]
    local out=$1 seed=$2 tracks=$3 splits=$4 composer=${5:-}
    "$MSLDM" data synth ${composer:+--composer $composer} --out "$DATA/$out" --tracks "$tracks" \
        --seed "$seed" --workers "$WORKERS" --augment --seconds 15 --soundfonts "$GM,$MONO" \
        --holdout-soundfont "$TIM" --splits "$splits" --resume
}
latents() {  # latents CORPUS SPLITS; with PRUNE_AUDIO=1 the corpus's train audio goes once they exist
    if ! done_mark "$1-train"; then  # never the latents of a half-rendered split
        echo "[rebuild] $1: its training split is not rendered whole yet: run \`$0 train\` first" >&2
        exit 3
    fi
    "$MSLDM" data latents --vae "$VAE" --data "$DATA/$1" --out "$DATA/$1-latents$TAG" --splits ${2//,/ }
    if [ "$PRUNE_AUDIO" = 1 ] && [ -d "$DATA/$1/train" ]; then
        echo "[rebuild] $1: latents made, deleting its train audio (PRUNE_AUDIO=1)"
        rm -rf "$DATA/$1/train"
    fi
}

stage_eval() {
    STAGE_GB=2
    step multi-eval synth multi 1 3000 test,validation
    step heldout "$MSLDM" data synth --composer heldout --out "$DATA/heldout" --tracks 40 --seed 2 \
        --workers 1 --seconds 15 --augment --soundfont "$TIM"
}
stage_train() {
    STAGE_GB=12
    step full-train synth full 3 2000 train synth-full
    step full2-train synth full2 5 2000 train synth-full
    step full3-train synth full3 7 2000 train synth-full
    step multi-train synth multi 1 3000 train
}
stage_latents() {
    STAGE_GB=4
    step full-latents$TAG latents full train
    step full2-latents$TAG latents full2 train
    step full3-latents$TAG latents full3 train
    step multi-latents$TAG latents multi train,validation
    step mix6$TAG merge_mix6
}

merge_mix6() {
    "$PY" scripts/merge_latents.py --out "$DATA/mix6-latents$TAG" --stats-from "$STATS" \
        multi:train,validation="$DATA/multi-latents$TAG" full:train="$DATA/full-latents$TAG" \
        full2:train="$DATA/full2-latents$TAG" full3:train="$DATA/full3-latents$TAG"
}
stage_relatents() {  # every corpus rendered (again, if its audio is gone), encoded by $VAE, pruned
    [ -n "$TAG" ] || { echo "[rebuild] relatents: set TAG (for example TAG=-v2) so the bundled VAE's latents stay" >&2; exit 2; }
    PRUNE_AUDIO=1
    local corpus seed
    for corpus in full:3 full2:5 full3:7; do
        seed=${corpus#*:}; corpus=${corpus%:*}
        if ! done_mark "$corpus-latents$TAG"; then
            [ -d "$DATA/$corpus/train" ] || rm -f "$DATA/.done-$corpus-train"  # its audio was pruned
            STAGE_GB=12 step "$corpus-train" synth "$corpus" "$seed" 2000 train synth-full
        fi
        STAGE_GB=4 step "$corpus-latents$TAG" latents "$corpus" train
    done
    if ! done_mark "multi-latents$TAG"; then
        [ -d "$DATA/multi/train" ] || rm -f "$DATA/.done-multi-train"
        STAGE_GB=12 step multi-train synth multi 1 3000 train
    fi
    PRUNE_AUDIO=0  # the 10-hour corpus's audio stays: the SourceVAE trains on it
    STAGE_GB=4 step "multi-latents$TAG" latents multi train,validation
    STAGE_GB=1 step "mix6$TAG" merge_mix6
}

case "${1:-}" in
    eval) stage_eval ;;
    train) stage_train ;;
    latents) stage_latents ;;
    relatents) stage_relatents ;;
    all) stage_eval; stage_train; stage_latents ;;
    *) sed -n '2,19p' "$0"; exit 2 ;;
esac
echo "[rebuild] ${1}: finished $(date +%T)"
