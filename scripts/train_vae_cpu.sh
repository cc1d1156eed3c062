#!/usr/bin/env bash
# Train (or continue) the spectral SourceVAE on this machine's CPU, in the background, under nice.
# Run state (optimizer, EMA, RNG, log.jsonl) lives outside the repository, in $RUN; the same
# command resumes it exactly. Stop it cleanly with:  kill -TERM $(cat $RUN.pid)
#   bash scripts/train_vae_cpu.sh            # data in ~/.cache/msldm/data/multi (render it first:
#                                            #   see docs/model-card.md, "Training")
#   FREEZE_ENCODER=1 bash scripts/train_vae_cpu.sh   # decoder only: the latents, and the shipped
#                                            #   denoiser trained on them, stay valid
#   LR=1.5e-4 RUN=... bash scripts/train_vae_cpu.sh  # another learning rate (default: the preset's);
#                                            #   a fine-tune of the committed decoder wants a lower one
#   FLUX=1 ...                               # weight of the flux loss (steady partials, sharp attacks;
#                                            #   default 0, as the committed VAE was trained)
#   PHASE=4 ...                              # weight of the direct phase (IF deviation) term (default 1)
#   PHASE_ERROR=l1 ...                       # that term as the wrapped absolute error (default cos)
#   PHASE_GRAD=4 ...                         # the audio losses train the phase too, through the last
#                                            #   4 frames of its running sum (default 0: off)
#   LOW_NFFT=2560 ...                        # a low-band decoder head at that STFT (with FREEZE_ENCODER=1
#                                            #   and the committed VAE as init, it starts from the main
#                                            #   head); LOW_XO=250,400 its crossover in Hz; LOW_GATE=1
#                                            #   a per-frame gate between the heads below it;
#                                            #   LOW_ENV=W the low-band envelope term (kick pre-echo);
#                                            #   ENC_LOW=1 the encoder reads the low band too (new latents)
#   LEVEL=W ...                              # weight of the level term (log frame RMS; default 0)
#   ADV=0.5 FEAT=1 ...                       # an adversarial fine-tune: weights of the GAN and
#                                            #   feature-matching terms (default 0: no discriminator);
#                                            #   with DISC_CH (width), DISC_FFTS / DISC_PERIODS (its
#                                            #   sub-discriminators, "none" for none), DISC_LR, and
#                                            #   ADV_START (steps the discriminator trains alone first)
# The next VAE (2026-12-05; docs/eval/spectral-vae-reconstruction.md), whole VAE, resumes with:
#   LR=2e-4 FLUX=1 PHASE=4 PHASE_ERROR=l1 THREADS=2 RUN=~/.cache/msldm/runs/vae-full-phase4-l1 bash scripts/train_vae_cpu.sh
# The next VAE's decoder alone (twenty-sixth session; its encoder, and so the latents v3 and a
# denoiser trained on them, unchanged; that VAE is the shipped one since the twenty-seventh), resumes with:
#   FREEZE_ENCODER=1 LR=1e-4 FLUX=1 PHASE=4 PHASE_ERROR=l1 LOW_NFFT=2560 LOW_XO=700,1000 LOW_GATE=1 LOW_ENV=1 \
#     ENC_LOW=1 THREADS=1 INIT=msldm/assets/vae-spectral/vae.safetensors \
#     RUN=~/.cache/msldm/runs/vae-nextdec-s26 bash scripts/train_vae_cpu.sh
# The shipped VAE with its low band widened to 2.6 kHz (crossover 2000-2600 Hz) and read by the
# encoder there too, the whole VAE (new latents; twenty-seventh session, for the guitar, whose
# partials the main grid's 1280 window misplaces by 2.2 Hz), resumes with:
#   LR=2e-4 FLUX=1 PHASE=4 PHASE_ERROR=l1 LOW_NFFT=2560 LOW_XO=2000,2600 LOW_GATE=1 LOW_ENV=1 ENC_LOW=1 \
#     THREADS=2 INIT=msldm/assets/vae-spectral/vae.safetensors RUN=~/.cache/msldm/runs/vae-wide2600-s27 \
#     bash scripts/train_vae_cpu.sh
# More timbres (twenty-eighth session; DATA=multi-sf4 is the 10-hour corpus's train split with
# csound's GM bank, an OPL3 FM bank and two recorded drum kits beside it, docs/data.md): the
# shipped VAE's decoder alone (shipped in that session; latents unchanged), resumes with:
#   DATA=~/.cache/msldm/data/multi-sf4 FREEZE_ENCODER=1 LR=1.5e-4 FLUX=1 PHASE=4 PHASE_ERROR=l1 LOW_NFFT=2560 \
#     LOW_XO=700,1000 LOW_GATE=1 LOW_ENV=1 ENC_LOW=1 THREADS=1 RUN=~/.cache/msldm/runs/vae-sf4dec-s28 \
#     bash scripts/train_vae_cpu.sh        (state gone: it warm-starts from the committed weights, its own;
#     shipped at step 5289; resumed in the twenty-ninth session to step 9756, not shipped: guitar up,
#     bass down, docs/eval/spectral-vae-reconstruction.md)
# and the whole VAE on the same data (new latents; not shipped), resumes with the same line without
# FREEZE_ENCODER=1, with LR=2e-4 and RUN=~/.cache/msldm/runs/vae-sf4-s28 (both runs started from
# the VAE shipped before, git show 3918221:msldm/assets/vae-spectral/vae.safetensors; the whole-VAE
# run at step 9641 after the twenty-ninth session: guitar 0.78, drums 0.86, bass 0.68, not shipped).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-$HOME/.cache/msldm/data/multi}
FREEZE=""; [ "${FREEZE_ENCODER:-0}" = 1 ] && FREEZE="--freeze-encoder"
RUN=${RUN:-$HOME/.cache/msldm/runs/vae-if_lock${FREEZE:+-decoder}}
THREADS=${THREADS:-2}
mkdir -p "$(dirname "$RUN")"
# A decoder-only fine-tune of the committed VAE (2026-12-05, twelfth session; 1197 steps beside
# evaluations, no gain in its validation loss yet; stopped) resumes with:
#   FREEZE_ENCODER=1 LR=1.5e-4 FLUX=1 PHASE=4 PHASE_ERROR=l1 THREADS=1 RUN=~/.cache/msldm/runs/vae-dec-v2 bash scripts/train_vae_cpu.sh
# Resume the run exactly; if its state is gone, warm-start from the committed weights.
# (INIT=CKPT: start from other weights, e.g. a low-band run's, to add its gate.)
RESUME="--init ${INIT:-msldm/assets/vae-spectral/vae.safetensors}"; [ -f "$RUN/train_state.json" ] && RESUME="--resume"
OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS nohup nice -n 3 .venv/bin/msldm train vae \
    --preset spectral --vae-phase if_lock --data "$DATA" --out "$RUN" --steps 200000 --batch 5 \
    --seconds 1.0 --log-every 25 --val-every 250 --val-batches 4 --ckpt-every 250 --ema-decay 0.995 \
    --workers 1 --no-progress ${LR:+--lr $LR} ${FLUX:+--flux-weight $FLUX} ${PHASE:+--phase-weight $PHASE} ${PHASE_ERROR:+--phase-error $PHASE_ERROR} ${PHASE_GRAD:+--phase-grad-frames $PHASE_GRAD} \
    ${ADV:+--adversarial-weight $ADV} ${FEAT:+--feature-weight $FEAT} ${DISC_CH:+--disc-channels $DISC_CH} \
    ${DISC_FFTS:+--disc-ffts $DISC_FFTS} ${DISC_PERIODS:+--disc-periods $DISC_PERIODS} ${DISC_LR:+--disc-lr $DISC_LR} \
    ${ADV_START:+--adversarial-start $ADV_START} ${LOW_NFFT:+--low-n-fft $LOW_NFFT} ${LOW_XO:+--low-crossover $LOW_XO} ${LOW_GATE:+--low-gate} ${LEVEL:+--level-weight $LEVEL} ${ENC_LOW:+--encoder-low} ${LOW_ENV:+--low-envelope-weight $LOW_ENV} $FREEZE $RESUME >> "$RUN.out" 2>&1 &
echo $! > "$RUN.pid"
echo "training in the background (pid $(cat "$RUN.pid")): curve in $RUN/log.jsonl, stop: kill -TERM \$(cat $RUN.pid)"
