#!/usr/bin/env bash
# Train denoisers on a lent GPU (the `device` tool: one H200, 15 minutes a session, at most 64 MiB
# carried per call), from latents packed by scripts/pack_latents.py. The data travels over
# several calls while the machine stays warm (30 s idle at most between calls):
#
#   stage DIR   copy DIR's packed part (and DIR/init.safetensors, else the committed cpu weights,
#               when present) into $WORK; return
#   smoke DIR   stage DIR, then run 60 steps of each preset on what is staged (does it run here,
#               how fast); return
#   train DIR   stage DIR, unpack every staged part, then train side by side until TRAIN_S
#               seconds have passed:
#                 a: the cpu preset, warm-started from the committed weights (the CPU default)
#                 b: the gpu preset (7.2M parameters) from scratch
#               then stop both cleanly (SIGTERM: final checkpoint) and leave in $OUT each run's
#               EMA weights as float16 (a at a third, two thirds and the end of the time, b at
#               two thirds and the end: the tool returns at most 8 files, 64 MiB) and logs.tgz.
#               The weights are judged at home by the CPU eval, never by the loss alone.
#
# A part that did not arrive (the machine went back between calls) costs its share of windows;
# every part is a fair sample. Run from the repository root with the device's python3 (torch;
# PY=... for another). TRAIN_S, BATCH, LR, DEVICE, WORK and OUT override the defaults.
set -uo pipefail
MODE=$1; PART=$2
WORK=${WORK:-/tmp/msldm-gpu}
OUT=${OUT:-$WORK/out}
TRAIN_S=${TRAIN_S:-420}
BATCH=${BATCH:-128}
DEVICE=${DEVICE:-cuda}
PY=${PY:-python3}
LR=${LR:-5e-4}
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # scripts/ import msldm from here
T0=$(date +%s)
mkdir -p "$WORK/parts" "$OUT"
cp -r "$PART"/part* "$WORK/parts/" && echo "staged $(ls "$WORK/parts")"
for f in "$PART/init.safetensors" msldm/assets/cpu/diffusion.safetensors; do  # run a's start
    [ -f "$f" ] && cp "$f" "$WORK/init.safetensors" && break
done
[ "$MODE" = stage ] && exit 0
if [ "$MODE" = smoke ]; then  # check the trainer runs here and time it: 60 steps of each preset
    "$PY" scripts/pack_latents.py unpack --out "$WORK/smoke-lat" "$WORK"/parts/part* | tail -1 || exit 1
    for preset in cpu gpu; do
        rm -rf "$WORK/smoke-$preset"; s=$(date +%s%N)
        "$PY" -m msldm.train.cli train diffusion --preset $preset --latents "$WORK/smoke-lat" \
            --out "$WORK/smoke-$preset" --steps 60 --batch "$BATCH" --device "$DEVICE" --workers 3 \
            --log-every 20 --val-every 1000 --ckpt-every 1000 --no-progress 2>&1 | grep -v Warn | tail -3
        echo "$preset: 60 steps of $BATCH in $(( ($(date +%s%N) - s) / 1000000 )) ms (with start-up)"
        tail -n 2 "$WORK/smoke-$preset/log.jsonl"
    done
    exit 0
fi

nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
rm -rf "$WORK/lat"
"$PY" scripts/pack_latents.py unpack --out "$WORK/lat" "$WORK"/parts/part* | tail -4 || exit 1
echo "unpacked at +$(( $(date +%s) - T0 )) s"

common=(--latents "$WORK/lat" --steps 10000000 --batch "$BATCH" --lr "$LR" --device "$DEVICE" --workers 3
        --log-every 100 --val-every 500 --val-batches 8 --ckpt-every 500 --ema-decay 0.9995
        --min-frame-share 0.6 --frame-threshold-db -50 --no-progress)
INIT=(); [ -f "$WORK/init.safetensors" ] && INIT=(--init "$WORK/init.safetensors")
"$PY" -m msldm.train.cli train diffusion --preset cpu --out "$WORK/run-a" "${INIT[@]}" "${common[@]}" \
    > "$WORK/a.out" 2>&1 &
PA=$!
"$PY" -m msldm.train.cli train diffusion --preset gpu --out "$WORK/run-b" "${common[@]}" \
    > "$WORK/b.out" 2>&1 &
PB=$!

nap() { local s=$(( $1 - $(date +%s) )); [ "$s" -gt 0 ] && sleep "$s"; return 0; }
snapshot() {  # snapshot TAG RUNS...: float16 EMA weights as $OUT/RUN-TAG.safetensors
    local tag=$1; shift
    for r in "$@"; do
        [ -f "$WORK/run-$r/diffusion.safetensors" ] || continue
        step=$("$PY" -c "import json;print(json.load(open('$WORK/run-$r/train_state.json'))['step'])" 2>/dev/null)
        "$PY" scripts/half_weights.py "$WORK/run-$r/diffusion.safetensors" "$OUT/$r-$tag.safetensors" \
            --provenance "scripts/train_denoiser_gpu.sh run $r, step $step" >/dev/null \
            && echo "$r-$tag: step $step"
    done
}
START=$(date +%s)
nap $(( START + TRAIN_S / 3 )); snapshot t1 a
tail -qn 1 "$WORK"/run-?/log.jsonl 2>/dev/null
nap $(( START + 2 * TRAIN_S / 3 )); snapshot t2 a b
tail -qn 1 "$WORK"/run-?/log.jsonl 2>/dev/null
nap $(( START + TRAIN_S ))
kill -TERM $PA $PB; wait $PA $PB
snapshot end a b
for r in a b; do grep -h '"val' "$WORK/run-$r/log.jsonl"; tail -n 2 "$WORK/$r.out"; done
tar -czf "$OUT/logs.tgz" -C "$WORK" a.out b.out run-a/log.jsonl run-b/log.jsonl 2>/dev/null
echo "done at +$(( $(date +%s) - T0 )) s"; ls -la "$OUT"
