"""bf16 on a CPU: bf16 weights, or fp32 weights under bf16 autocast? Measured on the cpu preset's alignment.

For each mode, the same SFT alignment (the cpu preset's data and settings, the same seed and batches) then
the same greedy generation on the built-in harmful evaluation prompts:

    python benchmarks/precision_cpu.py --steps 12 --out docs/results/precision_cpu

Prints and writes ``precision.json`` and ``precision.md``: mean step time, generation time, final training
loss, and how many of the generated answers equal the fp32 ones. Run it with nothing else on the CPU.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
import time
from pathlib import Path

import torch

from tvaccine.alignment import AlignSpec, run_alignment
from tvaccine.data.sources import load_source, pick_split
from tvaccine.evaluation.generation import generate_answers
from tvaccine.models import load_adapter, load_model, merge_adapter
from tvaccine.results_io import environment, write_json, write_text

# mode -> (weights' dtype, TrainingArguments bf16 flag, autocast while generating)
MODES = {"fp32": ("fp32", False, False), "bf16-autocast": ("fp32", True, True), "bf16-weights": ("bf16", False, False)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12, help="alignment steps per mode")
    parser.add_argument("--prompts", type=int, default=32, help="harmful prompts generated per mode")
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--out", default="docs/results/precision_cpu")
    args = parser.parse_args()
    prompts = pick_split(load_source("builtin:safety@eval"), "eval")[:args.prompts]
    rows, answers = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode, (dtype, autocast_train, autocast_generate) in MODES.items():
            spec = AlignSpec(method="sft", n_safety=60, n_benign=400, max_length=96, lora_alpha=4, dtype=dtype,
                             train={"learning_rate": 1e-3, "max_steps": args.steps, "per_device_train_batch_size": 8,
                                    "bf16": autocast_train, "use_cpu": True, "disable_tqdm": True})
            summary = run_alignment(spec, Path(tmp) / mode, log=lambda *_: None)
            model, tokenizer = load_model(spec.model, dtype=dtype)
            model = merge_adapter(load_adapter(model, Path(tmp) / mode / "adapter"))
            context = torch.autocast("cpu", dtype=torch.bfloat16) if autocast_generate else contextlib.nullcontext()
            start = time.perf_counter()
            with context:
                answers[mode] = generate_answers(model, tokenizer, prompts, "auto", args.max_new_tokens, 16, None)
            generation_s = time.perf_counter() - start
            rows[mode] = {"weights": dtype, "autocast": autocast_train, "mean_step_s": summary["mean_step_s"],
                          "final_loss": summary["final_loss"], "generation_s": generation_s,
                          "same_answers_as_fp32": sum(a == b for a, b in zip(answers[mode], answers["fp32"]))}
            print(mode, json.dumps(rows[mode]), flush=True)
    base = rows["fp32"]
    lines = ["| mode | weights | step (s) | vs fp32 | generation (s) | vs fp32 | final loss | answers = fp32 |",
             "|---|---|---|---|---|---|---|---|"]
    for mode, r in rows.items():
        speed = base["mean_step_s"] / r["mean_step_s"]
        lines.append(f"| {mode} | {r['weights']} | {r['mean_step_s']:.2f} | {speed:.2f}x "
                     f"| {r['generation_s']:.1f} | {base['generation_s'] / r['generation_s']:.2f}x | "
                     f"{r['final_loss']:.3f} | {r['same_answers_as_fp32']}/{len(prompts)} |")
    table = "\n".join(lines)
    print(table)
    out = Path(args.out)
    write_json(out / "precision.json", {"args": vars(args), "rows": rows, "environment": environment(),
                                        "threads": torch.get_num_threads()})
    write_text(out / "precision.md", f"`python benchmarks/precision_cpu.py --steps {args.steps} --out {args.out}`\n\n"
               f"{table}\n")


if __name__ == "__main__":
    main()
