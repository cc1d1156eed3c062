#!/usr/bin/env bash
# Train the default model end to end and record the time of every stage:
#   corpus (synthetic, FluidSynth) -> SourceVAE -> latents -> denoiser -> bundle -> evaluation
#   -> weights as safetensors shards (<= 16 MB each, float16) for carrying back.
#
#   PROFILE=gpu         bash scripts/train_default.sh runs/default  # `small`, on an H100-class GPU
#   PROFILE=cpu-preview bash scripts/train_default.sh runs/preview  # `preview`, ~35 min on 2 CPU cores
#   PROFILE=cpu-check   bash scripts/train_default.sh runs/check    # the same script, tiny, ~2 min
#
# Learning rates are higher than the paper's (5e-5 VAE, 2e-5 diffusion, for 100k / 400k
# steps) because these runs have a few thousand steps. VAE_STEPS etc. override a profile.
#
# On a GPU machine without FluidSynth, first run scripts/device_pack.sh here and carry
# build/device: the script uses it when it exists.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?usage: PROFILE=gpu|cpu-check bash scripts/train_default.sh OUT_DIR}
PROFILE=${PROFILE:-gpu}
MSLDM=${MSLDM:-msldm}
command -v "$MSLDM" >/dev/null || MSLDM=".venv/bin/msldm"
case "$PROFILE" in
  gpu)         PRESET=small TRACKS=2400 SECONDS=15 WORKERS=$(nproc) DEVICE=cuda
               VAE_STEPS=${VAE_STEPS:-8000} VAE_BATCH=7 VAE_LR=3e-4 ADV_START=1000
               DIFF_STEPS=${DIFF_STEPS:-8000} DIFF_BATCH=16 DIFF_LR=1e-4
               EVAL_N=200 EVAL_STEPS=10,25 EVAL_SECONDS=12 ;;
  cpu-preview) PRESET=preview TRACKS=200 SECONDS=12 WORKERS=2 DEVICE=cpu
               VAE_STEPS=${VAE_STEPS:-1200} VAE_BATCH=2 VAE_LR=1e-3 ADV_START=${VAE_STEPS:-1200}
               DIFF_STEPS=${DIFF_STEPS:-3000} DIFF_BATCH=8 DIFF_LR=5e-4
               EVAL_N=10 EVAL_STEPS=10,25 EVAL_SECONDS=12 ;;
  cpu-check)   PRESET=tiny TRACKS=20 SECONDS=8 WORKERS=2 DEVICE=cpu
               VAE_STEPS=${VAE_STEPS:-20} VAE_BATCH=1 VAE_LR=1e-3 ADV_START=10
               DIFF_STEPS=${DIFF_STEPS:-20} DIFF_BATCH=4 DIFF_LR=5e-4
               EVAL_N=2 EVAL_STEPS=4 EVAL_SECONDS=6 ;;
  *) echo "PROFILE must be gpu, cpu-preview or cpu-check" >&2; exit 2 ;;
esac
# glibc malloc returns big buffers to the OS and maps them again at every step; keeping them
# makes torch on CPU much faster (measured 2-3x on the VAE).
export MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=100000000000
SF_ARGS=()
if [ -d build/device/lib ]; then
  export LD_LIBRARY_PATH="$PWD/build/device/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  SF_ARGS=(--soundfont build/device/sf2/TimGM6mb.sf2)
fi
mkdir -p "$OUT"
STAGES="$OUT/stages.tsv"
printf 'stage\tseconds\n' > "$STAGES"
stage() {  # stage NAME CMD...: run, time, record
  local name=$1; shift
  echo "== $name: $*"
  local t0=$EPOCHREALTIME
  "$@"
  awk -v n="$name" -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN{printf "%s\t%.1f\n", n, b - a}' >> "$STAGES"
}
stage corpus "$MSLDM" data synth --out "$OUT/corpus" --tracks "$TRACKS" --seed 0 \
  --seconds "$SECONDS" --workers "$WORKERS" "${SF_ARGS[@]}"
stage vae "$MSLDM" train vae --preset "$PRESET" --data "$OUT/corpus" --out "$OUT/vae" \
  --steps "$VAE_STEPS" --batch "$VAE_BATCH" --lr "$VAE_LR" --adversarial-start "$ADV_START" \
  --device "$DEVICE" --no-progress --log-every 50
stage latents "$MSLDM" data latents --vae "$OUT/vae/vae.safetensors" --data "$OUT/corpus" \
  --out "$OUT/latents"
stage diffusion "$MSLDM" train diffusion --preset "$PRESET" --latents "$OUT/latents" \
  --out "$OUT/diffusion" --steps "$DIFF_STEPS" --batch "$DIFF_BATCH" --lr "$DIFF_LR" --device "$DEVICE" \
  --no-progress --log-every 50
stage export "$MSLDM" export --vae "$OUT/vae/vae.safetensors" \
  --diffusion "$OUT/diffusion/diffusion.safetensors" --out "$OUT/bundle" \
  --training-data "synthetic Slakh-like corpus: msldm data synth --tracks $TRACKS --seed 0 --seconds $SECONDS (soundfont ${SF_ARGS[1]:-FluidR3_GM}); VAE $VAE_STEPS steps, diffusion $DIFF_STEPS steps, profile $PROFILE"
stage eval "$MSLDM" eval --bundle "$OUT/bundle" --data "$OUT/corpus" --out "$OUT/report" \
  --n "$EVAL_N" --steps "$EVAL_STEPS" --seconds "$EVAL_SECONDS"
stage shards bash -c "'$MSLDM' ckpt shard '$OUT/vae/vae.safetensors' --out '$OUT/weights' --half \
  && '$MSLDM' ckpt shard '$OUT/diffusion/diffusion.safetensors' --out '$OUT/weights' --half"
cat "$STAGES"
