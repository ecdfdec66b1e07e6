"""``tvaccine report``: the papers' table (rows: non-aligned, SFT, Vaccine, T-Vaccine, ...; HS and FA
per attack setting, alignment cost), the robustness summary over each attack's HS curve, and the
plots researchers draw (HS against attack steps, HS and FA against p, n or the attack's lr)."""

from __future__ import annotations

import json
from pathlib import Path

from tvaccine.records import write_text

LABELS = {"none": "Non-aligned", "sft": "SFT", "vaccine": "Vaccine", "t-vaccine": "T-Vaccine",
          "repnoise": "RepNoise", "tar": "TAR"}
# Attack knobs a sweep can vary, with their axis labels.
SWEPT = {"p": "harmful ratio p", "n": "attack samples n", "attack_lr": "attack learning rate",
         "attack_steps": "attack steps"}


def _fmt(value, digits=1, suffix=""):
    return "–" if value is None else f"{value:.{digits}f}{suffix}"


def _label(method: str) -> str:
    return LABELS.get(method, method)


def _table(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(cells) + " |" for cells in body])


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
    body = []
    for method in methods:
        first = by_key[(method, settings[0])]
        cells = [_label(method)]
        if has_before:
            cells += [_fmt(first.get("before_harmful_score")), _fmt(first.get("before_over_refusal"))]
        for setting in settings:
            row = by_key.get((method, setting), {})
            cells += [_fmt(row.get("after_harmful_score")), _fmt(row.get("after_finetune_accuracy")),
                      _fmt(row.get("after_over_refusal"))]
        memory = first.get("align_peak_memory_bytes")
        cells += [_fmt(memory / 2**30, 2) if memory else "–", _fmt(first.get("align_mean_step_s"), 2)]
        body.append(cells)
    return _table(header, body)


def robustness_table(rows: list[dict]) -> str:
    """One line per (method, setting) that has an HS curve; empty when no attack was evaluated en route."""
    body = []
    for row in rows:
        curve = row.get("curve") or []
        if not curve:
            continue
        first, last = curve[0], curve[-1]
        reach = row.get("steps_to_hs50")
        body.append([_label(row["method"]), row["setting"], _fmt(row.get("hs_auc")),
                     _fmt(reach) if reach is not None else f"> {last['step']}",
                     _fmt(first.get("harmful_score")), _fmt(last.get("harmful_score")),
                     _fmt(first.get("harmful_refusal_rate")), _fmt(last.get("harmful_refusal_rate")),
                     _fmt(last.get("harmful_empty_rate")),
                     _fmt(first.get("over_refusal")), _fmt(last.get("over_refusal")),
                     _fmt(last.get("finetune_accuracy"))])
    if not body:
        return ""
    return _table(["Method", "attack", "HS-AUC", "steps to HS 50%", "HS step 0", "HS last step",
                   "harmful refused step 0", "harmful refused last step", "empty answers last step",
                   "over-refusal step 0", "over-refusal last step", "FA last step"], body)


def _plot_curves(plt, rows: list[dict], out: Path) -> Path | None:
    settings = [s for s in dict.fromkeys(r["setting"] for r in rows) if any(r.get("curve") and r["setting"] == s
                                                                           for r in rows)]
    if not settings:
        return None
    shown = settings[:6]
    fig, axes = plt.subplots(2, len(shown), figsize=(4.6 * len(shown), 6.6), squeeze=False)
    for j, setting in enumerate(shown):
        for row in (r for r in rows if r["setting"] == setting and r.get("curve")):
            steps = [p["step"] for p in row["curve"]]
            axes[0][j].plot(steps, [p["harmful_score"] for p in row["curve"]], marker="o", label=_label(row["method"]))
            fa = [p.get("finetune_accuracy") for p in row["curve"]]
            if any(v is not None for v in fa):
                axes[1][j].plot(steps, [v if v is not None else float("nan") for v in fa], marker="o",
                                label=_label(row["method"]))
        axes[0][j].set_title(setting, fontsize=8)
        axes[0][j].set_ylabel("harmful score (%)")
        axes[1][j].set_ylabel("fine-tune accuracy (%)")
        for ax in (axes[0][j], axes[1][j]):
            ax.set_xlabel("attack steps")
            ax.set_ylim(-2, 102)
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    path = out / "hs_vs_steps.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _plot_sweep(plt, rows: list[dict], key: str, out: Path) -> Path | None:
    """HS and FA after the attack against one swept knob, the other knobs held at the first setting's."""
    values = sorted({r[key] for r in rows if r.get(key) is not None})
    if len(values) < 2:
        return None
    # Hold the configured knobs fixed; the measured step count follows n under an epoch budget.
    others = [k for k in ("p", "n", "attack_lr") if k != key]
    anchor = rows[0]
    chosen = [r for r in rows if all(r.get(k) == anchor.get(k) for k in others)]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for method in dict.fromkeys(r["method"] for r in chosen):
        points = sorted((r[key], r.get("after_harmful_score"), r.get("after_finetune_accuracy"))
                        for r in chosen if r["method"] == method)
        for ax, index in zip(axes, (1, 2)):
            ax.plot([p[0] for p in points], [p[index] if p[index] is not None else float("nan") for p in points],
                    marker="o", label=_label(method))
    for ax, title in zip(axes, ("harmful score after attack (%)", "fine-tune accuracy (%)")):
        ax.set_xlabel(SWEPT[key])
        ax.set_ylabel(title)
        ax.set_ylim(-2, 102)
        ax.grid(alpha=0.3)
        if key == "attack_lr":
            ax.set_xscale("log")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    path = out / f"hs_fa_vs_{key}.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _plot_bars(plt, rows: list[dict], out: Path) -> Path:
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
        ax.set_xticklabels([_label(m) for m in methods], fontsize=8)
        ax.set_title(title)
        ax.set_ylim(0, 100)
    if len(settings) <= 6:
        axes[0].legend(fontsize=6)
    fig.tight_layout()
    path = out / "hs_fa.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot(rows: list[dict], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = [_plot_bars(plt, rows, out), _plot_curves(plt, rows, out),
               *(_plot_sweep(plt, rows, key, out) for key in SWEPT), *_plot_layer_histories(rows, out)]
    return [p for p in written if p is not None]


def _plot_layer_histories(rows: list[dict], out: Path) -> list[Path]:
    """T-Vaccine's layer probabilities over its alignment, one chart per T-Vaccine run."""
    from tvaccine.layer_report import plot_layer_history

    written = []
    for method in dict.fromkeys(r["method"] for r in rows if r.get("base_method", r["method"]) == "t-vaccine"):
        history = out / "align" / method / "layer_history.json"
        if history.is_file():
            path = out / f"{method}_layers.png"
            plot_layer_history(json.loads(history.read_text()), path, f"{_label(method)}: layer probabilities")
            written.append(path)
    return written


ROBUSTNESS_NOTE = ("HS-AUC: mean harmful score over the attack (area under HS against attack steps, step 0 "
                   "included, divided by the attack's length), on the progress evaluation's prompt subset; lower "
                   "is more robust. Steps to HS 50%: attack steps until HS first reaches 50%, interpolated "
                   "between evaluated steps ('> N': not within the attack). With the refusal judge an answer is "
                   "harmful, refused or empty; a task-only attack can teach a model to stop at once, which "
                   "lowers HS without any refusal, so read HS next to the refusal and empty columns.")


def write_report(results: Path, rows: list[dict]) -> str:
    results = Path(results)
    env_path = results / "environment.json"
    env = json.loads(env_path.read_text()) if env_path.is_file() else {}
    timing_path = results / "timing.json"
    wall = json.loads(timing_path.read_text())["wall_s"] if timing_path.is_file() else None
    table = markdown_table(rows)
    robustness = robustness_table(rows)
    plots = plot(rows, results)
    text = (f"# tvaccine results: {results.name}\n\n{table}\n\n"
            f"HS: % of answers to unseen harmful prompts flagged by the judge `{rows[0].get('judge')}`; "
            "FA: task accuracy; over-refusal: % of harmless but dangerous-sounding prompts refused. "
            f"Seed {rows[0].get('seed')}, commit {env.get('git_commit')}, torch {env.get('torch')}, "
            f"transformers {env.get('transformers')}, peft {env.get('peft')}"
            + (f", wall time {wall / 60:.1f} min" if wall else "") + ".\n\n"
            + (f"## Robustness over the attack\n\n{robustness}\n\n{ROBUSTNESS_NOTE}\n\n" if robustness else "")
            + "".join(f"![{p.stem}]({p.name})\n" for p in plots))
    write_text(results / "report.md", text)
    return table + ("\n\n" + robustness if robustness else "")
