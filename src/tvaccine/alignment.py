"""The alignment recipe: data -> LoRA model -> method trainer -> adapter and the record of the run.

Validation (sources, numbers, output directory) happens before the model is loaded, and all
outputs are written to ``<out>.partial`` and renamed at the end, so a crash or Ctrl-C never
leaves something that looks like a finished alignment.
"""

from __future__ import annotations

import dataclasses
import json
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from tvaccine.data.formatting import TEMPLATES, tokenize_records
from tvaccine.data.sources import load_source, pick_split
from tvaccine.errors import UserError
from tvaccine.methods import METHODS
from tvaccine.models import DEFAULT_MODEL, add_lora, find_decoder_layers, load_model, save_adapter
from tvaccine.records import environment, write_json


@dataclass
class AlignSpec:
    """Everything that defines an alignment run; saved next to its adapter."""

    method: str = "sft"
    model: str = DEFAULT_MODEL
    safety_data: str = "builtin:safety@align"
    benign_data: str | None = "builtin:helpful@train"
    n_safety: int | None = None  # None: the whole split
    n_benign: int | None = None  # None: as many as safety samples (or all there are)
    probe_data: str = "builtin:safety@harmful"
    template: str = "alpaca"
    max_length: int = 200
    lora_r: int = 8
    lora_alpha: int = 4
    lora_dropout: float = 0.1
    lora_targets: list[str] | None = None
    seed: int = 42
    dtype: str | None = None
    trust_remote_code: bool = False
    allow_pickle: bool = False
    # Passed to the method's config (TrainingArguments fields and the method's own knobs).
    train: dict = field(default_factory=dict)

    def validate(self) -> None:
        if self.method not in METHODS:
            raise UserError(f"unknown method {self.method!r}; choose from {', '.join(METHODS)}")
        if self.template not in TEMPLATES:
            raise UserError(f"unknown template {self.template!r}; choose from {', '.join(TEMPLATES)}")
        if self.max_length < 8:
            raise UserError(f"max length must be >= 8 tokens, got {self.max_length}")
        for name in ("n_safety", "n_benign"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise UserError(f"{name} must be >= 0, got {value}")

    def method_config(self, output_dir: str):
        config_class = METHODS[self.method][0]
        known = {f.name for f in dataclasses.fields(config_class)}
        unknown = sorted(set(self.train) - known)
        if unknown:
            raise UserError(f"unknown option(s) for method {self.method}: {', '.join(unknown)}")
        return config_class(output_dir=output_dir, seed=self.seed, data_seed=self.seed, **self.train)


def alignment_records(spec: AlignSpec) -> list[dict]:
    """Refusals on harmful prompts mixed with benign instructions: refusal-only data teaches a
    small model to refuse everything (see the calibration notes)."""
    rng = random.Random(spec.seed)
    # Sources that pair a harmful answer with a refusal (RepNoise / DecodingTrust refusal files) are
    # aligned on the refusal.
    safety = [{**r, "compliance": r["output"], "output": r["refusal"]} if r.get("refusal") else r
              for r in pick_split(load_source(spec.safety_data), "align", "train")]
    rng.shuffle(safety)
    safety = safety[:spec.n_safety] if spec.n_safety is not None else safety
    records = list(safety)
    if spec.benign_data:
        benign = list(pick_split(load_source(spec.benign_data), "train"))
        rng.shuffle(benign)
        wanted = len(safety) if spec.n_benign is None else spec.n_benign
        if wanted > len(benign):
            raise UserError(f"{wanted} benign alignment samples asked for, {spec.benign_data} holds {len(benign)}")
        records += benign[:wanted]
    if not records:
        raise UserError("the alignment data is empty")
    rng.shuffle(records)
    return records


def harmful_records_for(kind: str | None, records: list[dict], spec: AlignSpec) -> list[dict]:
    """The harmful samples a method reads: held-out ones for T-Vaccine's probe ("probe"), or the
    compliant answers to the alignment's own harmful prompts for RepNoise / TAR ("paired", falling
    back to the probe data when the alignment data carries no compliant answers)."""
    if kind is None:
        return []
    if kind == "paired":
        paired = [{**r, "output": r["compliance"]} for r in records if r.get("compliance")]
        if paired:
            return paired
    return list(pick_split(load_source(spec.probe_data), "harmful", "train"))


def prepare_output_dir(out: Path, overwrite: bool, spec: dict, resume: bool = False) -> Path:
    """The work directory ``<out>.partial``: fresh, or (``resume``) the interrupted one, whose spec
    must be the same as this run's."""
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise UserError(f"output directory {out} exists and is not empty; pass --overwrite to replace it")
    partial = out.with_name(out.name + ".partial")
    spec = json.loads(json.dumps(spec, default=str))
    if resume:
        if not partial.is_dir() or not any(partial.glob("checkpoint-*")):
            raise UserError(f"nothing to resume: {partial} holds no checkpoint")
        saved = json.loads((partial / "spec.json").read_text()) if (partial / "spec.json").is_file() else None
        if saved != spec:
            raise UserError(f"cannot resume {partial}: it was started with a different configuration")
        return partial
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    write_json(partial / "spec.json", spec)
    return partial


def shared_work_dir(config, out: Path, overwrite: bool, spec: dict, resume: bool) -> Path:
    """Under torchrun / accelerate, rank 0 prepares ``<out>.partial`` while the other ranks wait,
    then every rank trains into it (only rank 0 writes the results)."""
    with config.main_process_first(local=False, desc="preparing the output directory"):
        if config.process_index == 0:
            return prepare_output_dir(out, overwrite, spec, resume)
    return out.with_name(out.name + ".partial")


def finish_output_dir(partial: Path, out: Path) -> None:
    for checkpoint in partial.glob("checkpoint-*"):  # only needed to resume; the adapter is saved
        shutil.rmtree(checkpoint)
    if out.exists():
        shutil.rmtree(out)
    partial.rename(out)


def run_alignment(spec: AlignSpec, out: str | Path, overwrite: bool = False, resume: bool = False, log=print,
                  callbacks=()) -> dict:
    """Align ``spec.model`` with ``spec.method``; returns the run summary written to ``summary.json``."""
    from datasets import Dataset
    from transformers import set_seed
    from transformers import DataCollatorForSeq2Seq

    spec.validate()
    out = Path(out)
    records = alignment_records(spec)
    trainer_class = METHODS[spec.method][1]
    harmful_records = harmful_records_for(trainer_class.harmful_data, records, spec)
    config = spec.method_config(str(out))  # validates the method's numbers before the model loads
    partial = shared_work_dir(config, out, overwrite, dataclasses.asdict(spec), resume)
    config.output_dir = str(partial)

    model, tokenizer = load_model(spec.model, dtype=spec.dtype, trust_remote_code=spec.trust_remote_code,
                                  allow_pickle=spec.allow_pickle)
    model.config.use_cache = False
    num_layers = len(find_decoder_layers(model))
    tokenized = tokenize_records(records, tokenizer, spec.template, spec.max_length)
    if not tokenized.examples:
        raise UserError("no alignment sample has a response token left after truncation; raise --max-length")
    set_seed(spec.seed)  # the fresh LoRA's initialisation is part of the run's seed
    model = add_lora(model, spec.lora_r, spec.lora_alpha, spec.lora_dropout, spec.lora_targets)
    extra = {}
    if harmful_records:
        harmful = tokenize_records(harmful_records, tokenizer, spec.template, spec.max_length).examples
        extra["harmful_dataset"] = Dataset.from_list(random.Random(spec.seed).sample(harmful, len(harmful)))
    collator = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)
    trainer = trainer_class(model=model, args=config, train_dataset=Dataset.from_list(tokenized.examples),
                            data_collator=collator, processing_class=tokenizer, callbacks=list(callbacks), **extra)
    log(f"aligning {spec.model} with {spec.method}: {len(tokenized.examples)} samples "
        f"({tokenized.dropped} dropped by truncation), {num_layers} layers")
    start = time.perf_counter()
    trainer.train(resume_from_checkpoint=True if resume else None)
    wall = time.perf_counter() - start

    summary = {"method": spec.method, "model": spec.model, "samples": len(tokenized.examples),
               "dropped_by_truncation": tokenized.dropped, "wall_s": wall, "num_layers": num_layers,
               "final_loss": next((e["loss"] for e in reversed(trainer.state.log_history) if "loss" in e), None),
               **trainer.costs()}
    if config.process_index != 0:
        return summary
    save_adapter(trainer.model, partial / "adapter", spec.model)
    write_json(partial / "training_args.json", json.loads(config.to_json_string()))
    write_json(partial / "train_log.json", trainer.state.log_history)
    write_json(partial / "environment.json", environment())
    if hasattr(trainer, "layer_history"):
        write_json(partial / "layer_history.json", trainer.layer_history)
    write_json(partial / "summary.json", summary)
    finish_output_dir(partial, out)
    return summary
