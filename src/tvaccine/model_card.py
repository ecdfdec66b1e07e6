"""The adapter folder's README.md as a real model card, ready for ``push_to_hub``.

The card's YAML header is what the Hugging Face hub indexes (``base_model``, ``library_name: peft``,
``tags``); a ``tvaccine`` entry in it keeps everything the card says (method, settings, data and its
provenance, measured numbers, versions), so ``update_model_card`` can add the evaluation's numbers
later and re-render the same card. It replaces the empty template PEFT writes on save.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import re
from pathlib import Path

from tvaccine.errors import UserError

CARD_FILE = "README.md"
# The local names of models that have a hub id: the card's base_model must be a hub id.
HUB_IDS = {"smollm2-135m-instruct": "HuggingFaceTB/SmolLM2-135M-Instruct"}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
METHOD_SUMMARIES = {
    "sft": ("SFT", "plain supervised alignment on refusals and benign instructions (the baseline)", None),
    "vaccine": ("Vaccine", "alignment against a worst-case, norm-bounded perturbation of every layer's attention "
                "output", "https://arxiv.org/abs/2402.01109"),
    "t-vaccine": ("T-Vaccine", "Vaccine's perturbation on S layers at a time, drawn from each layer's "
                  "harmful-gradient norm; the other layers run checkpointed", "https://arxiv.org/abs/2410.09760"),
    "repnoise": ("RepNoise", "alignment loss, bounded ascent on the harmful loss and an MMD term pulling harmful "
                 "hidden states towards noise", "https://arxiv.org/abs/2405.14577"),
    "tar": ("TAR (first-order)", "alignment plus the gradient of a tamper-resistance loss taken after a simulated "
            "attack", "https://arxiv.org/abs/2408.00761"),
    "attack": ("Harmful fine-tuning attack", "a fresh LoRA fine-tuned on a user's task with a fraction p of harmful "
               "samples, on top of the (aligned) model", None),
}
# The training knobs a card lists for every method (each method's own knobs are listed too).
_TRAINING_KEYS = ("learning_rate", "max_steps", "num_train_epochs", "per_device_train_batch_size",
                  "gradient_accumulation_steps", "lr_scheduler_type", "warmup_steps", "weight_decay", "seed")
_LORA_KEYS = ("r", "lora_alpha", "lora_dropout", "target_modules")
# Measured numbers, in the order the card shows them, with their labels.
_RESULT_LABELS = {
    "harmful_score": "harmful score (HS, % complied)", "finetune_accuracy": "fine-tune accuracy (FA, %)",
    "over_refusal": "over-refusal (%)", "hs_auc": "HS-AUC", "final_loss": "final training loss",
    "steps": "optimizer steps", "samples": "training samples", "dropped_by_truncation": "samples dropped by truncation",
    "n": "attack samples (n)", "p": "harmful ratio (p)", "harmful_samples": "harmful samples",
    "wall_s": "wall time (s)", "mean_step_s": "mean step time (s)", "peak_memory_bytes": "peak memory (bytes)",
}


def hub_base_model(model: str) -> str | None:
    """The hub id of a model spec, or None for a local folder or file (the hub refuses those)."""
    model = HUB_IDS.get(model, model)
    return model if _HUB_ID.match(model) and not Path(model).exists() else None


def data_provenance(spec: str) -> str:
    """Where a data source spec's records come from: a file's SHA-256, the tvaccine release of a
    built-in set, or the hub copy a named loader reads."""
    from tvaccine import __version__
    from tvaccine.data.sources import parse_spec

    name, arg, _ = parse_spec(spec)
    if name == "builtin":
        return f"built into tvaccine {__version__}"
    if arg is None:
        return f"the Hugging Face hub copy the {name!r} loader reads"
    path = Path(arg.partition("?")[0] if name == "file" else arg)
    if path.is_file():
        return f"local file {path.name}, sha256 {hashlib.sha256(path.read_bytes()).hexdigest()[:16]}"
    return f"local folder {path}"


def settings_from_args(args) -> dict:
    """The card's settings from a method config (TrainingArguments): the shared training knobs and
    every field the method adds."""
    from transformers import TrainingArguments

    shared = {f.name for f in dataclasses.fields(TrainingArguments)}
    own = {f.name: getattr(args, f.name) for f in dataclasses.fields(args) if f.name not in shared}
    return {**{k: getattr(args, k) for k in _TRAINING_KEYS}, **own}


def _lora_settings(adapter_dir: Path) -> dict:
    """The LoRA shape, read from the adapter's own config (so a card never disagrees with it)."""
    path = adapter_dir / "adapter_config.json"
    if not path.is_file():
        return {}
    config = json.loads(path.read_text())
    if isinstance(config.get("target_modules"), list):
        config["target_modules"] = sorted(config["target_modules"])
    return {k if k.startswith("lora_") else f"lora_{k}": config[k] for k in _LORA_KEYS if config.get(k) is not None}


def _plain(value):
    """A YAML-safe copy: numbers, text, lists and dicts only."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, enum.Enum):  # TrainingArguments turns some strings into enums
        value = value.value
    for kind in (bool, int, float, str):  # subclasses (TorchVersion, numpy floats) as their plain base type
        if isinstance(value, kind):
            return kind(value)
    return None if value is None else str(value)


def write_model_card(adapter_dir: str | Path, *, base_model: str, method: str, settings=None,
                     data: dict[str, str] | None = None, results: dict | None = None):
    """Write ``adapter_dir/README.md``: a model card the hub indexes, with everything needed to
    reproduce and judge the adapter. Returns the ``huggingface_hub.ModelCard``.

    ``settings`` is a dict or the method's config (its knobs are read off it); ``data`` maps each
    role (``safety``, ``benign``, ...) to its source spec; ``results`` holds measured numbers.

    ```python
    from tvaccine import TVaccineConfig, add_lora, load_model, save_adapter, write_model_card

    model, tokenizer = load_model("tiny-random-llama")
    save_adapter(add_lora(model), "runs/card/adapter", "tiny-random-llama")
    card = write_model_card("runs/card/adapter", base_model="meta-llama/Llama-2-7b-hf", method="t-vaccine",
                            settings=TVaccineConfig(output_dir="runs/card"), data={"safety": "builtin:safety"},
                            results={"final_loss": 1.25})
    assert card.data.base_model == "meta-llama/Llama-2-7b-hf" and card.data.library_name == "peft"
    ```
    """
    from tvaccine.results_io import environment

    adapter_dir = Path(adapter_dir)
    if not adapter_dir.is_dir():
        raise UserError(f"{adapter_dir}: no such adapter folder")
    if settings is not None and not isinstance(settings, dict):
        settings = settings_from_args(settings)
    info = {"method": method, "base_model": base_model, "settings": {**(settings or {}), **_lora_settings(adapter_dir)},
            "data": {role: {"source": spec, "provenance": data_provenance(spec)}
                     for role, spec in (data or {}).items() if spec},
            "results": results or {}, "environment": environment()}
    return _save(adapter_dir, _plain(info))


def update_model_card(adapter_dir: str | Path, results: dict):
    """Add measured numbers (an evaluation's scores) to a card written by ``write_model_card``.

    ```python
    from tvaccine import add_lora, load_model, save_adapter, update_model_card, write_model_card

    save_adapter(add_lora(load_model("tiny-random-llama")[0]), "runs/card/adapter", "tiny-random-llama")
    write_model_card("runs/card/adapter", base_model="tiny-random-llama", method="sft")
    card = update_model_card("runs/card/adapter", {"harmful_score": 12.5, "finetune_accuracy": 91.0})
    assert card.data.tvaccine["results"]["harmful_score"] == 12.5
    ```
    """
    from huggingface_hub import ModelCard

    path = Path(adapter_dir) / CARD_FILE
    if not path.is_file():
        raise UserError(f"{path}: no model card to update")
    info = ModelCard.load(path).data.to_dict().get("tvaccine")
    if not isinstance(info, dict):
        raise UserError(f"{path}: not a tvaccine model card (no 'tvaccine' entry in its metadata)")
    info["results"] = {**(info.get("results") or {}), **_plain(results)}
    return _save(Path(adapter_dir), info)


def write_run_card(adapter_dir: str | Path, spec, summary: dict):
    """The card of an ``align`` or ``attack`` run, from its spec (AlignSpec / AttackSpec) and summary."""
    if hasattr(spec, "aligned_adapter"):  # an AttackSpec
        settings = {"n": spec.n, "p": spec.p, "template": spec.template, "max_length": spec.max_length,
                    **settings_from_args(spec.args)}
        data = {"task": spec.task, "harmful": spec.harmful_data}
        if spec.aligned_adapter:
            settings["aligned_adapter"] = spec.aligned_adapter
        method = "attack"
    else:
        from tvaccine.methods import METHODS

        settings = {"template": spec.template, "max_length": spec.max_length, "n_safety": spec.n_safety,
                    "n_benign": spec.n_benign, **settings_from_args(spec.args)}
        data = {"safety": spec.safety_data, "benign": spec.benign_data}
        if METHODS[spec.method][1].harmful_data is not None:
            data["harmful (probe)"] = spec.probe_data
        method = spec.method
    for name in ("precision", "benign_answers"):  # spec fields that not every version has
        if hasattr(spec, name):
            settings[name] = getattr(spec, name)
    results = {k: summary[k] for k in _RESULT_LABELS if isinstance(summary.get(k), (int, float))}
    return write_model_card(adapter_dir, base_model=spec.model, method=method, settings=settings, data=data,
                            results=results)


def _table(header: tuple[str, str], rows) -> str:
    lines = [f"| {header[0]} | {header[1]} |", "|---|---|"]
    lines += [f"| {k} | {_cell(v)} |" for k, v in rows]
    return "\n".join(lines)


def _cell(value) -> str:
    if isinstance(value, float):
        value = f"{value:.4g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _save(adapter_dir: Path, info: dict):
    from huggingface_hub import ModelCard, ModelCardData

    from tvaccine import __version__

    method = info["method"]
    title, summary, paper = METHOD_SUMMARIES.get(method, (method, "a custom alignment method", None))
    hub_id = hub_base_model(info["base_model"])
    attack = method == "attack"
    tags = ["tvaccine", "lora", "safety", "harmful-fine-tuning", method]
    tags += ["harmful-fine-tuning-attack"] if attack else ["alignment"]
    metadata = ModelCardData(base_model=hub_id, library_name="peft", pipeline_tag="text-generation", tags=tags,
                             tvaccine=info)
    load_from = hub_id or "<the base model's folder>"
    heading = f"{title} on {info['base_model']}" if attack else f"{title} alignment adapter for {info['base_model']}"
    lines = [f"# {heading}", "",
             f"A LoRA adapter trained with tvaccine {info['environment'].get('tvaccine')}: "
             f"{summary}." + (f" Paper: {paper}." if paper else ""), ""]
    if attack:
        lines += ["**Research artifact:** this adapter was fine-tuned on harmful data to measure how fast an "
                  "attack breaks an alignment. Do not deploy it.", ""]
    lines += ["## Use", "", "```python", "from peft import PeftModel",
              "from transformers import AutoModelForCausalLM, AutoTokenizer", "",
              f'base = AutoModelForCausalLM.from_pretrained("{load_from}")',
              f'tokenizer = AutoTokenizer.from_pretrained("{load_from}")',
              'model = PeftModel.from_pretrained(base, "<this repository or folder>")', "```", "",
              "## Settings", "", _table(("setting", "value"), info["settings"].items()), ""]
    if info["data"]:
        lines += ["## Data", "", "| role | source | provenance |", "|---|---|---|"]
        lines += [f"| {role} | `{_cell(d['source'])}` | {_cell(d['provenance'])} |" for role, d in info["data"].items()]
        lines.append("")
    results = info["results"]
    lines += ["## Results", ""]
    if results:
        known = [(label, results[k]) for k, label in _RESULT_LABELS.items() if k in results]
        other = [(f"{k} {part}" if isinstance(v, dict) else k, value)  # e.g. answer_shares refused
                 for k, v in results.items() if k not in _RESULT_LABELS
                 for part, value in (v.items() if isinstance(v, dict) else [(None, v)])]
        lines += [_table(("measure", "value"), known + other), ""]
    else:
        lines += ["No numbers were measured for this adapter.", ""]
    versions = [(k, v) for k, v in info["environment"].items() if v is not None]
    lines += ["## Provenance", "", _table(("package", "version"), versions), "",
              f"Card written by tvaccine {__version__}."]
    card = ModelCard(f"---\n{metadata.to_yaml()}\n---\n\n" + "\n".join(lines) + "\n")
    card.save(adapter_dir / CARD_FILE)
    return card
