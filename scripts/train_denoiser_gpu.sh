#!/usr/bin/env bash
# Train denoisers on a lent GPU (the `device` tool: one H200, 15 minutes a session, at most 64 MiB
# carried per call), from latents packed by scripts/pack_latents.py. The data travels over
# several calls while the machine stays warm (30 s idle at most between calls):
#
#   stage DIR            copy DIR's packed part and its start weights (DIR/init-PRESET.safetensors)
#                        into $WORK; the committed cpu weights start the cpu preset when no other
#                        weights are staged for it; return
#   smoke DIR [PRESET..] stage DIR, then run 60 steps of each preset on what is staged (does it run
#                        here, how fast); return
#   train DIR [PRESET..] stage DIR, unpack every staged part, then train one run per preset (default:
#                        cpu and gpu) side by side, each from its staged start weights or from
#                        scratch, until TRAIN_S seconds have passed; then stop them cleanly (SIGTERM:
#                        final checkpoint) and leave in $OUT each run's EMA weights as float16 at
#                        two thirds and the end of the time (and at a third when one run trains),
#                        PRESET-{t1,t2,end}.safetensors, and logs.tgz. At most two runs: the tool
#                        brings back 8 files, 64 MiB. The trainer's filter is the one the parts
#                        were packed with.
#                        The weights are judged at home by the CPU eval, never by the loss alone.
#
# 2026-12-04: cpu (warm) and gpu (scratch) side by side, TRAIN_S=500 BATCH=256, ran 3.3 steps/s
# each while the trainer drew its noise on the CPU (since fixed); docs/eval/model-history.md has the
# results and the calls made. Since then the trainer holds the windows on the GPU and cuts each
# batch there (`--resident`, on by default on a GPU): 20 steps/s at batch 256 for the gpu preset
# (9302 steps in TRAIN_S=470, later the same day). A part that did not arrive (the machine went
# back between calls) costs its share of windows; every part is a fair sample. Run from the repository
# root with the device's python3 (torch; PY=... for another). TRAIN_S, BATCH, LR, EMA, DEVICE,
# WORK and OUT override the defaults.
set -uo pipefail
usage="usage: $0 stage|smoke|train PACKED_DIR [PRESET...]"
[ $# -ge 2 ] || { echo "$usage" >&2; exit 2; }
MODE=$1; PART=$2; shift 2
case $MODE in stage|smoke|train) ;; *) echo "$usage" >&2; exit 2 ;; esac
if [ $# -gt 0 ]; then RUNS=("$@"); else RUNS=(cpu gpu); fi
WORK=${WORK:-/tmp/msldm-gpu}
OUT=${OUT:-$WORK/out}
TRAIN_S=${TRAIN_S:-420}
BATCH=${BATCH:-128}
DEVICE=${DEVICE:-cuda}
PY=${PY:-python3}
LR=${LR:-5e-4}
EMA=${EMA:-0.9995}
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # scripts/ import msldm from here
T0=$(date +%s)
mkdir -p "$WORK/parts" "$OUT"
cp -r "$PART"/part* "$WORK/parts/" && echo "staged $(ls "$WORK/parts")"
cp "$PART"/init-*.safetensors "$WORK/" 2>/dev/null  # start weights, by preset
[ -f "$WORK/init-cpu.safetensors" ] || [ ! -f msldm/assets/cpu/diffusion.safetensors ] \
    || cp msldm/assets/cpu/diffusion.safetensors "$WORK/init-cpu.safetensors"
[ "$MODE" = stage ] && exit 0
if [ "$MODE" = smoke ]; then  # check the trainer runs here and time it: 60 steps of each preset
    "$PY" scripts/pack_latents.py unpack --out "$WORK/smoke-lat" "$WORK"/parts/part* | tail -1 || exit 1
    for preset in "${RUNS[@]}"; do
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

# the filter the parts were packed with (the unpacked index.json records it), so the trainer keeps
# exactly the windows chosen at home
read -ra FILTER < <("$PY" -c "import json, math
f = json.load(open('$WORK/lat/index.json'))['packed']['filter']
db = ['--frame-threshold-db', str(20 * math.log10(f['frame_threshold']))] if 'frame_threshold' in f else []
print(' '.join(['--min-frame-share', str(f['min_frame_share'])] + db))") || exit 1
echo "filter: ${FILTER[*]}"
common=(--latents "$WORK/lat" --steps 10000000 --batch "$BATCH" --lr "$LR" --device "$DEVICE"
        --workers $(( 6 / ${#RUNS[@]} )) --log-every 100 --val-every 500 --val-batches 8 --ckpt-every 500
        --ema-decay "$EMA" "${FILTER[@]}" --no-progress)
PIDS=()
for preset in "${RUNS[@]}"; do
    INIT=(); [ -f "$WORK/init-$preset.safetensors" ] && INIT=(--init "$WORK/init-$preset.safetensors")
    base=${preset%_given}  # a conditional preset (cpu_given) starts from its joint model's weights
    [ ${#INIT[@]} -eq 0 ] && [ "$base" != "$preset" ] && [ -f "$WORK/init-$base.safetensors" ] \
        && INIT=(--init "$WORK/init-$base.safetensors")
    echo "run $preset: ${INIT[*]:-from scratch}"
    "$PY" -m msldm.train.cli train diffusion --preset "$preset" --out "$WORK/run-$preset" "${INIT[@]}" \
        "${common[@]}" > "$WORK/$preset.out" 2>&1 &
    PIDS+=($!)
done

nap() { local s=$(( $1 - $(date +%s) )); [ "$s" -gt 0 ] && sleep "$s"; return 0; }
snapshot() {  # snapshot TAG RUNS...: float16 EMA weights as $OUT/RUN-TAG.safetensors
    local tag=$1; shift
    for r in "$@"; do
        [ -f "$WORK/run-$r/diffusion.safetensors" ] || continue
        step=$("$PY" -c "import json;print(json.load(open('$WORK/run-$r/train_state.json'))['step'])" 2>/dev/null)
        "$PY" scripts/half_weights.py "$WORK/run-$r/diffusion.safetensors" "$OUT/$r-$tag.safetensors" \
            --provenance "scripts/train_denoiser_gpu.sh, preset $r, step $step" >/dev/null \
            && echo "$r-$tag: step $step"
    done
}
START=$(date +%s)
# t1 only for a single run: two runs' three float16 snapshots would pass the 64 MiB that comes back
nap $(( START + TRAIN_S / 3 )); [ ${#RUNS[@]} -gt 1 ] || snapshot t1 "${RUNS[@]}"
tail -qn 1 "$WORK"/run-*/log.jsonl 2>/dev/null
nap $(( START + 2 * TRAIN_S / 3 )); snapshot t2 "${RUNS[@]}"
tail -qn 1 "$WORK"/run-*/log.jsonl 2>/dev/null
nap $(( START + TRAIN_S ))
kill -TERM "${PIDS[@]}"  # each finishes its step and writes its final checkpoint
for _ in $(seq 90); do kill -0 "${PIDS[@]}" 2>/dev/null || break; sleep 1; done
kill -KILL "${PIDS[@]}" 2>/dev/null; wait "${PIDS[@]}" 2>/dev/null
snapshot end "${RUNS[@]}"
for r in "${RUNS[@]}"; do grep -h '"val' "$WORK/run-$r/log.jsonl"; tail -n 2 "$WORK/$r.out"; done
tar -czf "$OUT/logs.tgz" -C "$WORK" $(cd "$WORK" && ls -d ./*.out run-*/log.jsonl 2>/dev/null)
echo "done at +$(( $(date +%s) - T0 )) s"; ls -la "$OUT"
