"""T-Vaccine sensitivity study: rho, S, J, alignment steps and two non-paper variants against SFT
and Vaccine, several seeds each, summarised as robustness over the attack curve plus cost.

    python benchmarks/tvaccine_study.py                               # all of it: 3 seeds x 16 methods
    python benchmarks/tvaccine_study.py --variant-seeds 42            # variants on one seed only

Each seed is an ordinary ``tvaccine run`` of ``benchmarks/tvaccine_study.yaml`` in
``<results>/seed-<seed>`` (finished stages are reused when the command is run again), with its own
report. The study's own outputs (``study.md``, ``study.json`` and the plots) go to ``--out``.
Step time and peak memory are those of the alignment runs themselves (each in its own process).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import sys
import time
from pathlib import Path

import yaml

CORE = ("none", "sft", "vaccine", "t-vaccine")


def mean_sd(values: list[float]) -> tuple[float | None, float | None]:
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def fmt(values: list[float], digits: int = 1) -> str:
    mean, sd = mean_sd(values)
    if mean is None:
        return "–"
    return f"{mean:.{digits}f}" + (f" ± {sd:.{digits}f}" if len(values) > 1 else "")


def summarise(rows: list[dict]) -> list[dict]:
    """Per method, over seeds: the robustness summary, pre-attack HS and over-refusal, cost."""
    out = []
    sft_step = mean_sd([r["align_mean_step_s"] for r in rows if r["method"] == "sft"])[0]
    vaccine = [r for r in rows if r["method"] == "vaccine"]
    vaccine_step = mean_sd([r["align_mean_step_s"] for r in vaccine])[0]
    vaccine_mem = mean_sd([r["align_peak_memory_bytes"] for r in vaccine])[0]
    for method in dict.fromkeys(r["method"] for r in rows):
        chosen = [r for r in rows if r["method"] == method]
        first = [r["curve"][0] for r in chosen if r.get("curve")]
        step = mean_sd([r.get("align_mean_step_s") for r in chosen])[0]
        memory = mean_sd([r.get("align_peak_memory_bytes") for r in chosen])[0]
        out.append({
            "method": method, "seeds": sorted(r["seed"] for r in chosen),
            "hs_auc": [r.get("hs_auc") for r in chosen],
            "steps_to_hs50": [r.get("steps_to_hs50") for r in chosen],
            "hs_before": [p.get("harmful_score") for p in first],
            "over_refusal_before": [p.get("over_refusal") for p in first],
            "hs_after": [r.get("after_harmful_score") for r in chosen],
            "fa_after": [r.get("after_finetune_accuracy") for r in chosen],
            "align_final_loss": [r.get("align_final_loss") for r in chosen],
            "align_step_s": step, "align_peak_memory_bytes": memory,
            "step_vs_sft": step / sft_step if step and sft_step else None,
            "step_vs_vaccine": step / vaccine_step if step and vaccine_step else None,
            "memory_vs_vaccine": memory / vaccine_mem if memory and vaccine_mem else None,
            "curve_steps": chosen[0].get("curve_steps"),
        })
    return out


def markdown(summary: list[dict]) -> str:
    header = ["method", "seeds", "HS-AUC", "steps to HS 50%", "HS before", "over-refusal before", "HS after",
              "FA after", "align loss", "align step (s)", "step / SFT", "step / Vaccine", "peak mem / Vaccine"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for s in summary:
        reached = [v for v in s["steps_to_hs50"] if v is not None]
        never = len(s["steps_to_hs50"]) - len(reached)
        steps = (fmt(reached) if reached else "") + (f" ({never}x > {s['curve_steps']})" if never else "")
        lines.append("| " + " | ".join([
            s["method"], str(len(s["seeds"])), fmt(s["hs_auc"]), steps.strip() or "–", fmt(s["hs_before"]),
            fmt(s["over_refusal_before"]), fmt(s["hs_after"]), fmt(s["fa_after"]), fmt(s["align_final_loss"], 2),
            "–" if s["align_step_s"] is None else f"{s['align_step_s']:.2f}", ratio(s["step_vs_sft"]),
            ratio(s["step_vs_vaccine"]), ratio(s["memory_vs_vaccine"])]) + " |")
    return "\n".join(lines)


def ratio(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}x"


def plot(rows: list[dict], results: Path, out: Path) -> list[Path]:
    from tvaccine.layer_report import plot_layer_history
    from tvaccine.report import method_styles, plot_mean_curve, pyplot

    plt = pyplot()
    written = []
    fig, ax = plt.subplots(figsize=(7, 4.5))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    styles = method_styles(methods)
    for method in methods:
        runs = [r for r in rows if r["method"] == method]
        style = {**styles[method], "linewidth": 2.2 if method in CORE else 1.0}
        plot_mean_curve(ax, runs, "harmful_score", style, method)
    ax.set_xlabel("attack steps")
    ax.set_ylabel("harmful score (%), mean over seeds, 95% interval")
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    written.append(out / "study_curves.png")
    fig.savefig(written[-1], dpi=100)
    plt.close(fig)

    histories = []
    for method in dict.fromkeys(r["method"] for r in rows if r.get("base_method") == "t-vaccine"):
        seed = min(r["seed"] for r in rows if r["method"] == method)
        path = results / f"seed-{seed}" / "align" / method / "layer_history.json"
        if path.is_file():
            histories.append((method, seed, json.loads(path.read_text())))
    if histories:
        columns = 3
        rows_n = math.ceil(len(histories) / columns)
        fig, axes = plt.subplots(rows_n, columns, figsize=(15, 3.3 * rows_n), squeeze=False)
        for ax, (method, seed, history) in zip(axes.flat, histories):
            plot_layer_history(history, None, f"{method} (seed {seed})", ax=ax)
        for ax in list(axes.flat)[len(histories):]:
            ax.axis("off")
        fig.tight_layout()
        written.append(out / "study_layer_probabilities.png")
        fig.savefig(written[-1], dpi=90)
        plt.close(fig)
    return written


def copy_finished_stages(source: Path, seed_dir: Path, seed: int, methods: list[str]) -> None:
    config = yaml.safe_load((source / "run_config.yaml").read_text())
    if int(config.get("seed", 42)) != seed:
        return
    for method in methods:
        # An attack is copied only together with the alignment it was made on.
        if (seed_dir / "align" / method).exists() or (seed_dir / "attack" / method).exists():
            continue
        if method != "none" and not (source / "align" / method).is_dir():
            continue
        for stage in ("align", "attack"):
            if (source / stage / method).is_dir():
                shutil.copytree(source / stage / method, seed_dir / stage / method)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=str(Path(__file__).with_name("tvaccine_study.yaml")))
    parser.add_argument("--results", default="results/tvaccine-study")
    parser.add_argument("--out", default="docs/results/tvaccine_study")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44], help="seeds of every method")
    parser.add_argument("--variant-seeds", type=int, nargs="+",
                        help="seeds on which the non-core methods run too (default: --seeds)")
    parser.add_argument("--methods", help="comma-separated subset of the config's methods")
    parser.add_argument("--summarise-only", action="store_true", help="rebuild the study outputs from --results")
    parser.add_argument("--reuse", help="a `tvaccine run` results directory (e.g. the cpu preset's) whose finished "
                                        "stages are copied in for its seed; the pipeline reuses only those whose "
                                        "spec is identical and recomputes the rest")
    args = parser.parse_args()

    from tvaccine.config import load_config
    from tvaccine.errors import UserError
    from tvaccine.pipeline import Plan, load_results, run_experiment
    from tvaccine.report import write_report

    try:
        config = load_config(path=args.config)
        methods = args.methods.split(",") if args.methods else config["methods"]
        unknown = sorted(set(methods) - set(config["methods"]))
        if unknown:
            raise UserError(f"not in {args.config}: {', '.join(unknown)}")
        variant_seeds = set(args.variant_seeds or args.seeds)
        # Every seed's plan is built (and so validated) before anything runs.
        runs = [(seed, Plan({**config, "seed": seed}, [m for m in methods if m in CORE or seed in variant_seeds]))
                for seed in args.seeds]
    except UserError as exc:
        print(f"tvaccine_study: error: {exc}", file=sys.stderr)
        return 2
    results = Path(args.results)
    start = time.perf_counter()
    if not args.summarise_only:
        for seed, plan in runs:
            seed_dir = results / f"seed-{seed}"
            if args.reuse:
                copy_finished_stages(Path(args.reuse), seed_dir, seed, plan.methods)
            run_experiment(plan, seed_dir)
            write_report(seed_dir, load_results(seed_dir))
    rows = [row for seed, _ in runs if (results / f"seed-{seed}" / "results.jsonl").is_file()
            for row in load_results(results / f"seed-{seed}") if row["method"] in methods]
    if not rows:
        print(f"tvaccine_study: error: no results under {results}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary = summarise(rows)
    table = markdown(summary)
    plots = plot(rows, results, out)
    wall = time.perf_counter() - start
    env = json.loads((results / f"seed-{runs[0][0]}" / "environment.json").read_text())
    command = "python " + " ".join(sys.argv)
    (out / "study.json").write_text(json.dumps({"command": command, "config": config, "summary": summary,
                                                "rows": rows, "wall_s": wall, "environment": env}, indent=1))
    took = "summarised from saved runs" if args.summarise_only else f"this invocation took {wall / 60:.1f} min"
    (out / "study.md").write_text(
        f"# T-Vaccine sensitivity study\n\n`{command}`: commit {env.get('git_commit')}, {took}"
        f" (per-seed wall times in {results}/seed-*/timing.json).\n\n{table}\n\n"
        f"Mean ± sd over seeds. HS-AUC: mean HS over the {summary[0]['curve_steps']}-step attack curve "
        "(lower is more robust); HS / "
        "over-refusal before: step 0 of that curve; HS / FA after: the full evaluation after the attack. "
        "Step time and peak memory: the alignment runs' own.\n\n"
        + "".join(f"![{p.stem}]({p.name})\n" for p in plots))
    (out / "run_config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    print(table)
    print(f"\nstudy: {out / 'study.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
