"""``tvaccine layers``: the harmful-gradient probe of T-Vaccine, run on its own and drawn as a chart."""

from __future__ import annotations

from pathlib import Path

from tvaccine.data.formatting import tokenize_records
from tvaccine.errors import UserError
from tvaccine.layer_selection import layer_probabilities, probe_harmful_gradient_norms
from tvaccine.models import find_decoder_layers
from tvaccine.perturbation import AttentionHooks
from tvaccine.records import write_json


def probe_layers(model, tokenizer, records: list[dict], harmful: str, samples: int, batch_size: int, template: str,
                 max_length: int, out: Path) -> dict:
    from transformers import DataCollatorForSeq2Seq

    records = records[:samples]
    examples = tokenize_records(records, tokenizer, template, max_length).examples
    if not examples:
        raise UserError(f"no usable harmful sample in {harmful}")
    # Gradients must flow to the attention outputs; autograd.grad writes no parameter gradient.
    for param in model.parameters():
        param.requires_grad_(True)
    model.train()
    collate = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)
    device = next(model.parameters()).device
    batches = [{k: v.to(device) for k, v in collate(examples[i:i + batch_size]).items()}
               for i in range(0, len(examples), batch_size)]
    hooks = AttentionHooks(find_decoder_layers(model))
    norms = probe_harmful_gradient_norms(hooks, batches, lambda batch: model(**batch).loss)
    probabilities = layer_probabilities(norms)
    result = {"harmful": harmful, "samples": len(examples), "norms": norms.tolist(),
              "probabilities": probabilities.tolist()}
    write_json(out / "layer_norms.json", result)
    plot_layer_bars(probabilities.tolist(), out / "layer_norms.png", f"T-Vaccine layer probe on {harmful}")
    return result


def plot_layer_bars(probabilities: list[float], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(6, len(probabilities) * 0.25), 3.5))
    ax.bar(range(len(probabilities)), probabilities, color="#c0392b")
    ax.set_xlabel("decoder layer")
    ax.set_ylabel("p_l = s_l / sum(s)")
    ax.set_title(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_layer_history(history: list[dict], path: Path | None, title: str, ax=None) -> None:
    """T-Vaccine's layer probabilities at every probe of an alignment run (one line per probe,
    later probes darker) and how often each layer was drawn, from its ``layer_history.json``.
    Saved to ``path``, or drawn into ``ax`` of a larger figure (then ``path`` is None)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    probes = [e for e in history if e["event"] == "probe"]
    draws = [e["selected"] for e in history if e["event"] == "draw"]
    if not probes:
        raise UserError("the layer history holds no probe")
    own = ax is None
    if own:
        fig, ax = plt.subplots(figsize=(max(6, len(probes[0]["probabilities"]) * 0.25), 3.5))
    layers = range(len(probes[0]["probabilities"]))
    if draws:
        counts = [sum(layer in d for d in draws) / len(draws) for layer in layers]
        ax.bar(layers, counts, color="#bdc3c7", label="share of draws containing the layer")
    cmap = plt.get_cmap("Reds")
    for i, probe in enumerate(probes):
        ax.plot(layers, probe["probabilities"], marker=".", color=cmap(0.35 + 0.65 * (i + 1) / len(probes)),
                label=f"p_l at step {probe['step']}")
    ax.set_xlabel("decoder layer")
    ax.set_ylabel("probability")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=6)
    if own:
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100)
        plt.close(fig)
