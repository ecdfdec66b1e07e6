"""What one forward-only progress point costs on the cpu preset's data, and where it goes.

    python benchmarks/forward_point_cost.py [--repeats 3] [--precision auto] [--out docs/results/forward_point_cost]

The cpu preset's instrument (64 held-out refusals of builtin:safety@eval: the openings, the alignment loss and
the drift; the harmful answers of BeaverTails' probe split, from the data mirror or the hub) on the default
model, measured ``--repeats`` times after one warm-up; the drift reference is set once, as an attack's step 0
does. Run it with nothing else on the CPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    from tvaccine.evaluation.forward_metrics import ForwardInstrument, instrument_sets, opening_logprobs, token_losses
    from tvaccine.models import load_model
    from tvaccine.precision import autocast, describe

    model, tokenizer = load_model("smollm2-135m-instruct", device="cpu")
    sets = instrument_sets("builtin:safety@eval", "beavertails", 64)
    instrument = ForwardInstrument(sets, tokenizer, "auto", batch_size=args.batch_size)
    parts = {"openings": lambda: opening_logprobs(model, instrument.opening_prompts, instrument.openings,
                                                  args.batch_size),
             "alignment loss + drift states": lambda: token_losses(model, instrument.examples["alignment"],
                                                                   args.batch_size, hidden=True),
             "harmful loss": lambda: token_losses(model, instrument.examples["harmful"], args.batch_size),
             "whole point": lambda: instrument.measure(model)}
    seconds = {}
    with autocast(args.precision, torch.device("cpu")):
        instrument.reference_from_next()
        instrument.measure(model)  # warm-up, and step 0's reference
        for name, work in parts.items():
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                work()
                times.append(time.perf_counter() - start)
            seconds[name] = times
    report = {"command": " ".join(["python benchmarks/forward_point_cost.py", *(argv or sys.argv[1:])]),
              "precision": describe(args.precision, torch.device("cpu")), "threads": torch.get_num_threads(),
              "n_alignment": len(instrument.examples["alignment"]), "n_harmful": len(instrument.examples["harmful"]),
              "openings": len(instrument.openings), "seconds": seconds,
              "median_s": {name: statistics.median(t) for name, t in seconds.items()}}
    for name, value in report["median_s"].items():
        print(f"{name:32s} {value:6.2f} s (median of {args.repeats}; all: "
              f"{', '.join(f'{t:.2f}' for t in seconds[name])})")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "forward_point_cost.json").write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
