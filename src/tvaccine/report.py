"""``tvaccine report``: the papers' table (rows: non-aligned, SFT, Vaccine, T-Vaccine; HS and FA per
setting, alignment cost) and plots, from a results directory."""

from __future__ import annotations

import json
from pathlib import Path

from tvaccine.records import write_text

LABELS = {"none": "Non-aligned", "sft": "SFT", "vaccine": "Vaccine", "t-vaccine": "T-Vaccine",
          "repnoise": "RepNoise", "tar": "TAR"}


def _fmt(value, digits=1, suffix=""):
    return "–" if value is None else f"{value:.{digits}f}{suffix}"


def markdown_table(rows: list[dict]) -> str:
    settings = list(dict.fromkeys(r["setting"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    by_key = {(r["method"], r["setting"]): r for r in rows}
    has_before = any("before_harmful_score" in r for r in rows)
    header = ["Method"]
    if has_before:
        header += ["HS before", "over-refusal before"]
    for setting in settings:
        header += [f"HS ({setting})", f"FA ({setting})", f"over-refusal ({setting})"]
    header += ["align peak mem (GiB)", "align step (s)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method in methods:
        first = by_key[(method, settings[0])]
        cells = [LABELS.get(method, method)]
        if has_before:
            cells += [_fmt(first.get("before_harmful_score")), _fmt(first.get("before_over_refusal"))]
        for setting in settings:
            row = by_key.get((method, setting), {})
            cells += [_fmt(row.get("after_harmful_score")), _fmt(row.get("after_finetune_accuracy")),
                      _fmt(row.get("after_over_refusal"))]
        memory = first.get("align_peak_memory_bytes")
        cells += [_fmt(memory / 2**30, 2) if memory else "–", _fmt(first.get("align_mean_step_s"), 2)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(rows: list[dict], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    methods = list(dict.fromkeys(r["method"] for r in rows))
    settings = list(dict.fromkeys(r["setting"] for r in rows))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    width = 0.8 / max(len(settings), 1)
    for j, setting in enumerate(settings):
        chosen = {r["method"]: r for r in rows if r["setting"] == setting}
        xs = [i + j * width for i in range(len(methods))]
        for ax, key in zip(axes, ("after_harmful_score", "after_finetune_accuracy")):
            ax.bar(xs, [chosen.get(m, {}).get(key) or 0 for m in methods], width, label=setting)
    for ax, title in zip(axes, ("Harmful score after attack (%)", "Fine-tune accuracy (%)")):
        ax.set_xticks([i + width * (len(settings) - 1) / 2 for i in range(len(methods))])
        ax.set_xticklabels([LABELS.get(m, m) for m in methods])
        ax.set_title(title)
        ax.set_ylim(0, 100)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "hs_fa.png", dpi=100)
    plt.close(fig)
    written.append(out / "hs_fa.png")
    ps = sorted({r["p"] for r in rows})
    if len(ps) > 1:
        fig, ax = plt.subplots(figsize=(5, 3.8))
        for method in methods:
            points = sorted((r["p"], r["after_harmful_score"]) for r in rows if r["method"] == method)
            ax.plot([p for p, _ in points], [h for _, h in points], marker="o", label=LABELS.get(method, method))
        ax.set_xlabel("harmful ratio p")
        ax.set_ylabel("harmful score (%)")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "hs_vs_p.png", dpi=100)
        plt.close(fig)
        written.append(out / "hs_vs_p.png")
    return written


def write_report(results: Path, rows: list[dict]) -> str:
    results = Path(results)
    env_path = results / "environment.json"
    env = json.loads(env_path.read_text()) if env_path.is_file() else {}
    timing_path = results / "timing.json"
    wall = json.loads(timing_path.read_text())["wall_s"] if timing_path.is_file() else None
    table = markdown_table(rows)
    plots = plot(rows, results)
    text = (f"# tvaccine results: {results.name}\n\n{table}\n\n"
            f"HS: % of answers to unseen harmful prompts flagged by the judge `{rows[0].get('judge')}`; "
            "FA: task accuracy; over-refusal: % of harmless but dangerous-sounding prompts refused. "
            f"Seed {rows[0].get('seed')}, commit {env.get('git_commit')}, torch {env.get('torch')}, "
            f"transformers {env.get('transformers')}, peft {env.get('peft')}"
            + (f", wall time {wall / 60:.1f} min" if wall else "") + ".\n\n"
            + "".join(f"![{p.stem}]({p.name})\n" for p in plots))
    write_text(results / "report.md", text)
    return table
