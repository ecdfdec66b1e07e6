#!/usr/bin/env bash
# SFT alignment calibration on the project's own held-out set (benchmarks/heldout), seed 42 unless SEED is set:
#   bash benchmarks/calibrate_alignment.sh "30 45 60"      # refusal counts to try
# The cpu preset's alignment settings with the model's own benign answers (the default), 40 steps at lr 1e-3,
# LoRA alpha 4, then `tvaccine evaluate` on the 70 held-out harmful and 30 held-out borderline prompts
# (48 new tokens, the verdict judge). Adapters go to runs/calibration/; the evaluations, the alignment
# summaries and the benign answers' provenance are copied to docs/results/alignment_calibration/.
set -euo pipefail
cd "$(dirname "$0")/.."
SEED=${SEED:-42}
STEPS=${STEPS:-40}
TV=${TV:-.venv/bin/tvaccine}
OUT=docs/results/alignment_calibration
for n in ${1:-30 45 60}; do
  name="sft-s${n}-steps${STEPS}-seed${SEED}"
  run=runs/calibration/$name
  if [ ! -f "$run/summary.json" ]; then
    $TV align --method sft --n-safety "$n" --n-benign 411 --max-length 96 --lora-alpha 4 --learning-rate 1e-3 \
      --max-steps "$STEPS" --per-device-train-batch-size 8 --seed "$SEED" --out "$run" --overwrite
  fi
  $TV evaluate --adapter "$run/adapter" --eval-harmful file:benchmarks/heldout/harmful.jsonl \
    --borderline file:benchmarks/heldout/borderline.jsonl --n-harmful 70 --n-borderline 30 \
    --max-new-tokens-harmful 48 --out "$run-heldout" --overwrite > /dev/null
  mkdir -p "$OUT/$name"
  cp "$run/summary.json" "$run/benign_answers.json" "$run/spec.json" "$OUT/$name/"
  rm -rf "$OUT/$name/heldout" && cp -r "$run-heldout" "$OUT/$name/heldout"
  python3 - "$OUT/$name" <<'PY'
import json, sys
s = json.load(open(sys.argv[1] + "/heldout/scores.json"))
a = s["answer_shares"]
print(sys.argv[1], f"refused {a['refused']:.1f} complied {a['complied']:.1f} empty {a['empty']:.1f} "
      f"degenerate {a['degenerate']:.1f} over-refusal {s['over_refusal']:.1f} align-loss {s.get('alignment_loss')}")
PY
done
