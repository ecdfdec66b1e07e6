"""``tvaccine layers``: the harmful-gradient probe of T-Vaccine, run on its own and drawn as a chart."""

from __future__ import annotations

from pathlib import Path

from tqdm.auto import tqdm

from tvaccine.data.formatting import IGNORE_INDEX, tokenize_records
from tvaccine.errors import UserError
from tvaccine.layer_selection import layer_probabilities, probe_harmful_gradient_norms
from tvaccine.models import find_decoder_layers
from tvaccine.perturbation import AttentionHooks
from tvaccine.plots import LEGEND_FONT, pyplot
from tvaccine.results_io import write_json


def probe_layers(model, tokenizer, records: list[dict], harmful: str, samples: int, batch_size: int, template: str,
                 max_length: int, out: Path) -> dict:
    from transformers import DataCollatorForSeq2Seq

    records = records[:samples]
    if not records:
        raise UserError(f"no harmful sample in {harmful}")
    examples = tokenize_records(records, tokenizer, template, max_length).examples
    if not examples:
        raise UserError(f"no usable harmful sample in {harmful}: all {len(records)} lose every answer token when "
                        f"cut to max_length {max_length}; raise the max length")
    # Gradients must flow to the attention outputs; autograd.grad writes no parameter gradient.
    for param in model.parameters():
        param.requires_grad_(True)
    model.train()
    collate = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=IGNORE_INDEX)
    device = next(model.parameters()).device
    batches = [{k: v.to(device) for k, v in collate(examples[i:i + batch_size]).items()}
               for i in range(0, len(examples), batch_size)]
    hooks = AttentionHooks(find_decoder_layers(model))
    # A probe of the default model on a CPU takes minutes: the bar steps as each batch's pass starts.
    with tqdm(total=len(batches), desc=f"probing {len(hooks.layers)} layers with {len(examples)} samples",
              unit="batch") as bar:
        def loss(batch):
            bar.update()
            return model(**batch).loss

        norms = probe_harmful_gradient_norms(hooks, batches, loss)
    probabilities = layer_probabilities(norms)
    result = {"harmful": harmful, "samples": len(examples), "norms": norms.tolist(),
              "probabilities": probabilities.tolist()}
    write_json(out / "layer_norms.json", result)
    plot_layer_bars(probabilities.tolist(), out / "layer_norms.png", f"T-Vaccine layer probe on {harmful}")
    return result


def outlier_limit(values: list[float]) -> float | None:
    """A y-axis top that keeps the small values readable when a few dwarf them (T-Vaccine's layer 0
    often has p = 0.5 next to p = 0.02 elsewhere), or None when no value does."""
    ordered = sorted(values)
    if len(ordered) < 4:
        return None
    reference = ordered[int(0.8 * (len(ordered) - 1))]  # the 80th percentile
    if reference <= 0 or ordered[-1] <= 3 * reference:
        return None
    return 2 * reference


def _mark_clipped(ax, xs, values, top: float, prefix: str = "", row: int = 0) -> None:
    """Cut the axis at ``top`` and write the true value of everything cut off at the top edge
    (``row``: a second series writes its values one line lower)."""
    ax.set_ylim(0, top)
    for x, value in zip(xs, values):
        if value > top:
            ax.annotate(f"{prefix}{value:.2f}\u2191", (x, top), xytext=(0, -2 - 11 * row), textcoords="offset points",
                        ha="center", va="top", fontsize=8,
                        bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.8))


def plot_layer_bars(probabilities: list[float], path: Path, title: str) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(6, len(probabilities) * 0.25), 3.5), layout="constrained")
    layers = range(len(probabilities))
    ax.bar(layers, probabilities, color="#c0392b")
    top = outlier_limit(probabilities)
    if top is not None:
        _mark_clipped(ax, layers, probabilities, top)
    ax.set_xlabel("decoder layer")
    ax.set_ylabel("p_l = s_l / sum(s)" + (" (axis cut)" if top is not None else ""))
    ax.set_title(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_layer_history(history: list[dict], path: Path | None, title: str, ax=None) -> None:
    """T-Vaccine's layer probabilities at every probe of an alignment run (one line per probe,
    later probes darker) and each layer's share of the layers drawn, from its ``layer_history.json``.
    Saved to ``path``, or drawn into ``ax`` of a larger figure (then ``path`` is None)."""
    plt = pyplot()
    probes = [e for e in history if e["event"] == "probe"]
    draws = [e["selected"] for e in history if e["event"] == "draw"]
    if not probes:
        raise UserError("the layer history holds no probe")
    own = ax is None
    if own:
        fig, ax = plt.subplots(figsize=(max(6, len(probes[0]["probabilities"]) * 0.25), 3.5), layout="constrained")
    layers = range(len(probes[0]["probabilities"]))
    # Each layer's share of all layers drawn sums to 1 like p_l, so both read on one axis.
    drawn = sum(len(d) for d in draws)
    shares = [sum(layer in d for d in draws) / drawn for layer in layers] if drawn else []
    if shares:
        ax.bar(layers, shares, color="#bdc3c7", label="share of the drawn layers")
    cmap = plt.get_cmap("Reds")
    for i, probe in enumerate(probes):
        # Only the first and the last probe are named: the shade orders the others.
        named = i in (0, len(probes) - 1)
        ax.plot(layers, probe["probabilities"], marker=".", color=cmap(0.35 + 0.65 * (i + 1) / len(probes)),
                label=f"p_l at step {probe['step']}" if named else "_nolegend_")
    last = probes[-1]["probabilities"]
    top = outlier_limit(last + shares)
    if top is not None:
        _mark_clipped(ax, layers, last, top, "p ")
        _mark_clipped(ax, layers, shares, top, "drawn ", row=1)
    ax.set_xlabel("decoder layer")
    ax.set_ylabel("probability" + (" (axis cut)" if top is not None else ""))
    ax.set_title(title, fontsize=LEGEND_FONT)
    ax.legend(fontsize=LEGEND_FONT, loc="best")
    if own:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100)
        plt.close(fig)
