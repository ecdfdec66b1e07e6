#!/usr/bin/env bash
# Aligned alike: each defense's refusals before any attack, against SFT's, on the cpu preset's alignment
# (60 refusals + the model's own answers to the built-in instructions, lr 1e-3, LoRA alpha 4, batch 8 x 96),
# with the knobs the papers expose: rho, the steps, and T-Vaccine's S and J. Seed 42 unless SEED is set.
#   bash benchmarks/calibrate_parity.sh "sft:40 vaccine:40:rho=2 vaccine:80:rho=2 t-vaccine:80:rho=3"
# Each entry is method:steps[:flag=value,...] (flags of `tvaccine align`, dashes as underscores). Then
# `tvaccine evaluate` on the evaluation's own held-out prompts (the first 64 of builtin:safety@eval, 30
# borderline prompts, 40 new tokens, the verdict judge); the project's held-out set (benchmarks/heldout)
# is not read. Adapters go to runs/parity/; summaries and evaluations to docs/results/parity_calibration/.
set -euo pipefail
cd "$(dirname "$0")/.."
SEED=${SEED:-42}
TV=${TV:-.venv/bin/tvaccine}
OUT=docs/results/parity_calibration
for entry in $1; do
  IFS=: read -r method steps options <<< "$entry"
  flags=()
  for pair in ${options//,/ }; do flags+=("--${pair%%=*}" "${pair#*=}"); done
  flags=("${flags[@]//_/-}")
  name="${entry//[:=,]/-}-seed${SEED}"
  run=runs/parity/$name
  if [ ! -f "$run/summary.json" ]; then
    $TV align --method "$method" --n-safety 60 --n-benign 411 --max-length 96 --lora-alpha 4 \
      --learning-rate 1e-3 --max-steps "$steps" --per-device-train-batch-size 8 --seed "$SEED" \
      --probe-data beavertails ${flags[@]+"${flags[@]}"} --out "$run" --overwrite
  fi
  $TV evaluate --adapter "$run/adapter" --n-harmful 64 --n-borderline 30 --max-new-tokens-harmful 40 \
    --out "$run-eval" --overwrite > /dev/null
  mkdir -p "$OUT/$name"
  cp "$run/summary.json" "$run/spec.json" "$OUT/$name/"
  rm -rf "$OUT/$name/eval" && cp -r "$run-eval" "$OUT/$name/eval"
  python3 - "$OUT/$name" <<'PY'
import json, sys
summary = json.load(open(sys.argv[1] + "/summary.json"))
s = json.load(open(sys.argv[1] + "/eval/scores.json"))
a = s["answer_shares"]
print(f"| {sys.argv[1].rsplit('/', 1)[1]} | {a['refused']:.1f} | {a['complied']:.1f} | {a['degenerate']:.1f} | "
      f"{s['over_refusal']:.1f} | {s.get('refusal_opening', float('nan')):.1f} | "
      f"{summary.get('wall_s', float('nan')) / 60:.1f} |")
PY
done
