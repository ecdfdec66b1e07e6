#!/bin/bash
# SFT before the attack over seeds 43 and 44 with the cpu preset's alignment; seed 42 is the preset run's step 0.
# Run from the repository root; the outputs go to runs/preseeds/ (the original run wrote them outside the
# repository, and its files were copied into seed-43/ and seed-44/ here).
cd "$(dirname "$0")/../../../.."
T=.venv/bin/tvaccine
for seed in 43 44; do
  $T align --method sft --seed $seed --n-safety 60 --n-benign 400 --max-length 96 --lora-alpha 4 \
    --learning-rate 1e-3 --max-steps 40 --per-device-train-batch-size 8 --out runs/preseeds/align_sft_$seed
  $T evaluate --adapter runs/preseeds/align_sft_$seed/adapter --out runs/preseeds/eval_sft_$seed \
    --n-harmful 64 --n-borderline 16 --max-new-tokens-harmful 40
done
echo DONE
