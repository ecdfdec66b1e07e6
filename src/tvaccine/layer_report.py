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
