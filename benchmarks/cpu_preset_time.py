"""Wall time of one seed of the cpu preset, with where it went and the precision it ran in.

    python benchmarks/cpu_preset_time.py --results docs/results/cpu_preset --seed 42

Runs ``tvaccine run --preset cpu`` into ``--results`` (a finished folder's stages are reused, so run it on
a new folder to time everything), then prints the breakdown of its ``timing.json``. Self-distilled benign
answers are cached across runs (``$TVACCINE_CACHE``): point it at an empty folder to time a cold start.
Run it with nothing else on the CPU.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from tvaccine.cli import main as tvaccine
from tvaccine.report import timing_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="results/cpu-time")
    parser.add_argument("--seed", default="42")
    parser.add_argument("--methods", default=None, help="e.g. none,sft (default: the preset's four)")
    args = parser.parse_args()
    argv = ["run", "--preset", "cpu", "--results", args.results, "--seed", args.seed]
    if args.methods:
        argv += ["--methods", args.methods]
    start = time.perf_counter()
    code = tvaccine(argv)
    wall = time.perf_counter() - start
    if code:
        raise SystemExit(code)
    timing = json.loads((Path(args.results) / "timing.json").read_text())
    rows = [json.loads(line) for line in (Path(args.results) / "results.jsonl").read_text().splitlines()]
    print(f"\nwall time {wall / 60:.1f} min (timing.json: {timing['wall_s'] / 60:.1f} min, "
          f"{100 * timing['accounted_s'] / timing['wall_s']:.1f}% in named phases); "
          f"precision {', '.join(sorted({r.get('precision', '?') for r in rows}))}\n")
    print(timing_table(timing))


if __name__ == "__main__":
    main()
