#!/usr/bin/env bash
# Train (or continue) the CPU default's multi-source denoiser on this machine's CPU, in the
# background, under nice, on latents made by the bundled SourceVAE. The data (docs/data.md):
# the plays-through corpus's training split and the 10-hour corpus's validation split,
#   .venv/bin/msldm data synth --composer synth-full --out ~/.cache/msldm/data/full ...  (docs/data.md)
#   .venv/bin/msldm data latents --vae msldm/assets/vae-spectral/vae.safetensors \
#       --data ~/.cache/msldm/data/full --out ~/.cache/msldm/data/full-latents --splits train
#   .venv/bin/msldm data latents --vae msldm/assets/vae-spectral/vae.safetensors \
#       --data ~/.cache/msldm/data/multi --out ~/.cache/msldm/data/multi-latents --splits validation
#   .venv/bin/python scripts/merge_latents.py --out ~/.cache/msldm/data/mix-latents \
#       --stats-from msldm/assets/cpu/diffusion.safetensors \
#       ~/.cache/msldm/data/full-latents ~/.cache/msldm/data/multi-latents
#   bash scripts/train_denoiser_cpu.sh
# (the committed weights were first trained on the 10-hour corpus's own training split:
# LATENTS=~/.cache/msldm/data/multi-latents RUN=~/.cache/msldm/runs/denoiser-cpu-full).
# Run 5 (2026-12-03, not shipped: lower validation loss, quieter and emptier guitars; see
# docs/eval/model-history.md) used both corpora re-rendered without FluidR3_GS:
#   python scripts/merge_latents.py --out ~/.cache/msldm/data/mix4-latents \
#       --stats-from msldm/assets/cpu/diffusion.safetensors \
#       multi:train,validation=~/.cache/msldm/data/multi-latents full:train=~/.cache/msldm/data/full-latents
#   LATENTS=~/.cache/msldm/data/mix4-latents RUN=~/.cache/msldm/runs/denoiser-cpu-run5 bash scripts/train_denoiser_cpu.sh
# Its window filter counted a frame as sounding above -70 dBFS (9228 windows); FRAME_DB=-50
# (--frame-threshold-db) keeps 5428, without the faint tails (run 6, 6792 steps, not shipped).
# Run 7 (2026-12-04, not shipped; docs/eval/model-history.md) used the plays-through corpus's training
# split alone with the 10-hour corpus's validation split, FRAME_DB=-50: only 2745 windows,
# fewer than the shipped third run had (3169); total generation improved (FD 66 -> 31 at step
# 9750), the guitar given drums and piano got quieter and emptier:
#   python scripts/merge_latents.py --out ~/.cache/msldm/data/mix7-latents \
#       --stats-from msldm/assets/cpu/diffusion.safetensors \
#       full:train=~/.cache/msldm/data/full-latents multi:validation=~/.cache/msldm/data/multi-latents
#   THREADS=1 FRAME_DB=-50 LATENTS=~/.cache/msldm/data/mix7-latents RUN=~/.cache/msldm/runs/denoiser-cpu-run7 \
#       bash scripts/train_denoiser_cpu.sh
# Between GPU sessions the gpu preset's run (scripts/train_denoiser_gpu.sh, docs/eval/model-history.md)
# continues here on the larger mix5 cache (docs/data.md; 26655 training windows at the
# trainer's hop), from the weights the H200 brought back, 2026-12-04:
#   python scripts/merge_latents.py --out ~/.cache/msldm/data/mix5-latents \
#       --stats-from msldm/assets/cpu/diffusion.safetensors multi:train,validation=~/.cache/msldm/data/multi-latents \
#       full:train=~/.cache/msldm/data/full-latents full2:train=~/.cache/msldm/data/full2-latents
#   PRESET=gpu BATCH=16 LR=3e-4 FRAME_DB=-50 INIT=<the GPU run's weights> \
#       LATENTS=~/.cache/msldm/data/mix5-latents RUN=~/.cache/msldm/runs/denoiser-gpu-b5 bash scripts/train_denoiser_cpu.sh
# Given-stem conditioning (2026-12-04, fifth session; docs/eval/model-history.md): the cpu U-Net with a
# second input, the given stems' clean latents and their mask, warm-started from the committed
# weights (its new input starts at zero), half of each batch's rows shown a random given part,
# on mix6 (docs/data.md):
#   PRESET=cpu_given LR=3e-4 FRAME_DB=-50 LATENTS=~/.cache/msldm/data/mix6-latents \
#       RUN=~/.cache/msldm/runs/denoiser-given1 bash scripts/train_denoiser_cpu.sh
# Run 9 (2026-12-05, not shipped; docs/eval/model-history.md, eighth session): the plain `cpu` preset
# on mix6 from the shipped weights, stopped at step 11598; the same command resumes it:
#   THREADS=2 FRAME_DB=-50 LATENTS=~/.cache/msldm/data/mix6-latents RUN=~/.cache/msldm/runs/denoiser-cpu-run9 \
#       bash scripts/train_denoiser_cpu.sh
# Run v2 (2026-12-05, tenth session, not shipped; docs/eval/model-history.md): the plain `cpu` preset from
# the shipped weights on the latents of the next SourceVAE (`VAE=... TAG=-v2 bash
# scripts/rebuild_cache.sh relatents`), stopped at step 11442; the same command resumes it:
#   THREADS=2 FRAME_DB=-50 LATENTS=~/.cache/msldm/data/mix6-latents-v2 RUN=~/.cache/msldm/runs/denoiser-cpu-v2 \
#       bash scripts/train_denoiser_cpu.sh
# Run v2ln (2026-12-05, eleventh session, stopped at step 2788; docs/eval/model-history.md): run v2's weights trained on, with
# the training noise levels half log-normal (TRAIN_SIGMA=mixed, msldm.edm.sample_training_sigma):
# the uniform draw left the denoiser unable to denoise below sigma 0.3, where the sampler takes
# half its steps. Its validation "loss" is then on the mixed draw; "loss_s0.1" compares runs:
#   TRAIN_SIGMA=mixed INIT=~/.cache/msldm/runs/v2-step<N>.safetensors THREADS=2 FRAME_DB=-50 \
#       LATENTS=~/.cache/msldm/data/mix6-latents-v2 RUN=~/.cache/msldm/runs/denoiser-cpu-v2ln bash scripts/train_denoiser_cpu.sh
# Run v2cf (2026-12-05, eleventh session; shipped at step 6250): the same, with 4 banks of
# per-channel filters added to the U-Net at zero (CHANNEL_FILTERS=4, --channel-filters): the
# cpu U-Net's 128-channel first level cannot carry 320 channels' own noise, so without them the
# denoiser barely denoised below sigma 0.3 whatever the draw (the run above stayed at a
# loss_s0.1 of 0.96). The same command resumes it:
#   CHANNEL_FILTERS=4 TRAIN_SIGMA=mixed INIT=~/.cache/msldm/runs/v2-step11957.safetensors THREADS=2 FRAME_DB=-50 \
#       LATENTS=~/.cache/msldm/data/mix6-latents-v2 RUN=~/.cache/msldm/runs/denoiser-cpu-v2cf bash scripts/train_denoiser_cpu.sh
# Run v2cd (2026-12-05, twelfth session, stopped at step 3095, not shipped): a cool-down of v2cf's
# step-16383 weights at lr 1.5e-4; the loss moved by 0.003, and step 16383 itself generated worse
# than the shipped step 6250 (docs/eval/model-history.md, "Twelfth session"). The same command resumes it:
#   CHANNEL_FILTERS=4 TRAIN_SIGMA=mixed LR=1.5e-4 INIT=~/.cache/msldm/runs/v2cf-step16383.safetensors THREADS=1 \
#       FRAME_DB=-50 LATENTS=~/.cache/msldm/data/mix6-latents-v2 RUN=~/.cache/msldm/runs/denoiser-cpu-v2cd \
#       bash scripts/train_denoiser_cpu.sh
# Run v2dense (2026-12-05, twelfth session; stopped at step 7002, not shipped: louder guitars
# but basses +4.5..+6.2 dB and a worse FD on the validation clips, docs/eval/model-history.md): the shipped step-6250 weights
# trained on windows where every stem sounds in at least 80% of the frames (MIN_SHARE, default
# 0.6), at lr 2e-4: the generated guitars given drums and piano are too often sparse or quiet. The
# same command resumes it:
#   MIN_SHARE=0.8 CHANNEL_FILTERS=4 TRAIN_SIGMA=mixed LR=2e-4 INIT=~/.cache/msldm/runs/v2cf-step6250.safetensors \
#       THREADS=2 FRAME_DB=-50 LATENTS=~/.cache/msldm/data/mix6-latents-v2 \
#       RUN=~/.cache/msldm/runs/denoiser-cpu-v2dense bash scripts/train_denoiser_cpu.sh
# Run v2g9 (2026-12-05, thirteenth session; measured, not shipped: docs/eval/model-history.md): the shipped step-6250 weights
# trained on, at lr 2e-4, on windows where the guitar sounds in at least 90% of the frames and
# the other stems in 60% (STEM_SHARE="guitar=0.9": 27613 of the 35874 windows the 0.6 rule
# keeps; MIN_SHARE=0.8 for every stem kept 13547 and made the basses too loud), stopped at step
# 7523. The same command resumes it:
#   STEM_SHARE="guitar=0.9" CHANNEL_FILTERS=4 TRAIN_SIGMA=mixed LR=2e-4 \
#       INIT=~/.cache/msldm/runs/v2cf-step6250.safetensors THREADS=1 FRAME_DB=-50 \
#       LATENTS=~/.cache/msldm/data/mix6-latents-v2 RUN=~/.cache/msldm/runs/denoiser-cpu-v2g9 \
#       bash scripts/train_denoiser_cpu.sh
# Run v2g9p8 (measured, not shipped; docs/eval/model-history.md, thirteenth and fourteenth sessions):
# as v2g9 with the piano's share kept too (v2g9 moved level from the piano to the guitar in total
# generation): STEM_SHARE="guitar=0.9 piano=0.8" and RUN=~/.cache/msldm/runs/denoiser-cpu-v2g9p8;
# after the wipe of 2026-12-06 run again from the then committed v2cf weights (now
# INIT=v2cf.safetensors, as below), stopped at step 4938: its total generation leaves the drums
# quiet (-3.1..-3.2 dB on one validation set).
# Run v2g9p8d8 (2026-12-06, stopped at step 3062; docs/eval/model-history.md, "Fourteenth session"): the
# drums' share kept as well, STEM_SHARE="guitar=0.9 piano=0.8 drums=0.8",
# RUN=~/.cache/msldm/runs/denoiser-cpu-v2g9p8d8, from the weights committed before the fifteenth
# session (INIT=v2cf.safetensors, from `git show 1a6afb5:msldm/assets/cpu/diffusion.safetensors`).
# Its step 3000 and v2g9p8's (the same INIT), mixed evenly and interpolated 0.6 with those
# weights (scripts/interpolate_weights.py), are the shipped denoiser since the fifteenth session
# (docs/eval/model-history.md, "Fifteenth session").
# Runs gn0 and gnb (2026-12-06, seventeenth session; measured, not shipped: docs/eval/model-history.md,
# "Seventeenth session"): the given part of half the rows noised less (r * sigma, r ~ U[0, 1];
# GIVEN_NOISE, --given-noise), so that imputation could show the given stems clearer (sampler
# field given_noise). gn0 from the shipped weights, stopped at step 5423:
#   GIVEN_NOISE=0 GIVEN_PROB=0.5 STEM_SHARE="guitar=0.9 piano=0.8" CHANNEL_FILTERS=4 TRAIN_SIGMA=mixed \
#       LR=2e-4 THREADS=1 FRAME_DB=-50 LATENTS=~/.cache/msldm/data/mix6-latents \
#       RUN=~/.cache/msldm/runs/denoiser-cpu-gn0 bash scripts/train_denoiser_cpu.sh
# gnb from gn0's last weights (INIT=), more rows generating the rest given a bass
# (GIVEN_PROB=0.6 GIVEN_STEMS="bass=0.8 drums=0.6 guitar=0.35 piano=0.35", --given-stem-prob),
# RUN=~/.cache/msldm/runs/denoiser-cpu-gnb, stopped at step 6732.
# Run vv22 (2026-12-06, twenty-second session; measured, not shipped: docs/eval/model-history.md,
# "Twenty-second session"): the shipped weights on mix7v (docs/data.md: mix6 and the synth-varied
# corpus's train split twice), so that the pianos without a left-hand root and the guitars on
# inversions teach the model to read a chord from its whole voicing; stopped at step 6241:
#   STEM_SHARE="guitar=0.9 piano=0.8" CHANNEL_FILTERS=4 TRAIN_SIGMA=mixed LR=2e-4 THREADS=2 FRAME_DB=-50 \
#       LATENTS=~/.cache/msldm/data/mix7v-latents RUN=~/.cache/msldm/runs/denoiser-cpu-vv22 bash scripts/train_denoiser_cpu.sh
# Runs v3a and v3b (2026-12-07, twenty-fifth session; docs/eval/model-history.md, "Twenty-fifth session"):
# the shipped weights adapted to the latents of the next SourceVAE (then msldm/assets/vae-spectral-next,
# shipped as msldm/assets/vae-spectral since the twenty-seventh session; its encoder also reads the
# low band: `VAE=msldm/assets/vae-spectral/vae.safetensors TAG=-v3 bash scripts/rebuild_cache.sh
# relatents`), side by side on one thread each: v3a with
# the window filter of the weights shipped on 2026-12-05, v3b with that of their fine-tunes
# (the shipped denoiser is an interpolation of the two kinds). The same commands resume them:
#   CHANNEL_FILTERS=4 TRAIN_SIGMA=mixed LR=2e-4 THREADS=1 FRAME_DB=-50 \
#       LATENTS=~/.cache/msldm/data/mix6-latents-v3 RUN=~/.cache/msldm/runs/denoiser-cpu-v3a bash scripts/train_denoiser_cpu.sh
#   STEM_SHARE="guitar=0.9 piano=0.8" CHANNEL_FILTERS=4 TRAIN_SIGMA=mixed LR=2e-4 THREADS=1 FRAME_DB=-50 \
#       LATENTS=~/.cache/msldm/data/mix6-latents-v3 RUN=~/.cache/msldm/runs/denoiser-cpu-v3b bash scripts/train_denoiser_cpu.sh
# Run v3g (2026-12-07, twenty-sixth session; "Twenty-sixth session"): v3b's weights trained on with
# half the rows given a part, the bass most often, the given part noised as the sampler shows it
# (given noise 1) and scored only elsewhere, for the guitar v3b leaves quiet given bass and piano:
#   GIVEN_NOISE=1 GIVEN_PROB=0.5 GIVEN_STEMS="bass=0.8 drums=0.5 guitar=0.35 piano=0.35" \
#       STEM_SHARE="guitar=0.9 piano=0.8" CHANNEL_FILTERS=4 TRAIN_SIGMA=mixed LR=2e-4 THREADS=2 FRAME_DB=-50 \
#       LATENTS=~/.cache/msldm/data/mix6-latents-v3 INIT=$HOME/.cache/msldm/runs/v3b-step5994.safetensors \
#       RUN=~/.cache/msldm/runs/denoiser-cpu-v3g bash scripts/train_denoiser_cpu.sh
# THREADS=1 leaves the other core to a 1-thread eval (`msldm eval --threads 1`): on 2026-12-04
# training ran 205 steps/min beside one (360 alone on 2 threads) and a 24-clip eval took 4.5 min,
# without the spinning that two 2-thread jobs cause.
# STEM_SHARE="guitar=0.8" sets the window filter's share for named stems (space-separated
# STEM=SHARE), the others keep MIN_SHARE.
# Run state (optimizer, EMA, RNG, log.jsonl) lives outside the repository, in $RUN; the same
# command resumes it exactly; if the state is gone it warm-starts from the committed weights.
# Windows are kept only where every stem sounds in at least 60% of the window's frames
# (--min-frame-share): a model trained on windows where parts drop out answers a request
# for a guitar with silence.
# Give it the cores alone: on 2026-12-03 it ran 400 steps/min alone, but 25-50 steps/min while
# an eval (2 threads) and a corpus render (2 workers) ran beside it (threads spinning at barriers
# on oversubscribed cores), and a latent extraction beside it slowed from 4.7 to 0.3 tracks/s:
# stop it (it resumes exactly) rather than share.
# Stop it cleanly with:  kill -TERM $(cat $RUN.pid)
set -euo pipefail
cd "$(dirname "$0")/.."
LATENTS=${LATENTS:-$HOME/.cache/msldm/data/mix-latents}
RUN=${RUN:-$HOME/.cache/msldm/runs/denoiser-cpu-plays}
PRESET=${PRESET:-cpu}
THREADS=${THREADS:-2}
BATCH=${BATCH:-8}
LR=${LR:-5e-4}
INIT=${INIT:-msldm/assets/cpu/diffusion.safetensors}
mkdir -p "$(dirname "$RUN")"
RESUME=""; [ -f "$INIT" ] && RESUME="--init $INIT"; [ -f "$RUN/train_state.json" ] && RESUME="--resume"
export MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=100000000000
OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS nohup nice -n 3 .venv/bin/msldm train diffusion \
    --preset "$PRESET" --latents "$LATENTS" --out "$RUN" --steps 200000 --batch "$BATCH" --lr "$LR" \
    --log-every 25 --val-every 250 --val-batches 8 --ckpt-every 250 --ema-decay 0.999 \
    --min-frame-share "${MIN_SHARE:-0.6}" $(for kv in ${STEM_SHARE:-}; do printf -- '--stem-frame-share %s ' "$kv"; done) ${FRAME_DB:+--frame-threshold-db $FRAME_DB} --workers 1 --no-progress $RESUME \
    ${COND_LR:+--cond-lr $COND_LR} ${TRAIN_SIGMA:+--train-sigma $TRAIN_SIGMA} \
    ${GIVEN_NOISE:+--given-noise $GIVEN_NOISE} ${GIVEN_PROB:+--given-prob $GIVEN_PROB} \
    $(for kv in ${GIVEN_STEMS:-}; do printf -- '--given-stem-prob %s ' "$kv"; done) \
    ${CHANNEL_FILTERS:+--channel-filters $CHANNEL_FILTERS} \
    >> "$RUN.out" 2>&1 &
echo $! > "$RUN.pid"
echo "training in the background (pid $(cat "$RUN.pid")): curve in $RUN/log.jsonl, stop: kill -TERM \$(cat $RUN.pid)"
