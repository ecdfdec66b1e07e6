"""The alignment recipe: refusals and benign data -> a fresh LoRA trained by the method -> the adapter
and the record of the run (the shared steps are ``training.LoRARun``'s)."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from tvaccine.config import DEFAULT_SEED, DEFAULT_TEMPLATE, DTYPES, coerce_fields, option, require, training_arguments
from tvaccine.data.formatting import TEMPLATES
from tvaccine.data.self_distill import self_distilled
from tvaccine.data.sources import load_source, pick_split, require_outputs
from tvaccine.errors import UserError
from tvaccine.methods import METHODS
from tvaccine.models import DEFAULT_MODEL, cache_dir, find_decoder_layers
from tvaccine.precision import PRECISIONS, SpecPrecision, autocast, train_with_precision
from tvaccine.results_io import write_json, write_jsonl
from tvaccine.timing import breakdown, snapshot, timed
from tvaccine.training import LoRARun, check_lora, load_for_training

BENIGN_ANSWERS = ("self", "given")


@dataclass
class AlignSpec(SpecPrecision):
    """Everything that defines an alignment run; saved next to its adapter as ``spec.json``.

    ```python
    from tvaccine import AlignSpec

    spec = AlignSpec(method="t-vaccine", model="meta-llama/Llama-2-7b-hf", train={"max_steps": 100},
                     method_options={"rho": 3.0, "layers_per_draw": 8})
    assert spec.args.rho == 3.0 and spec.args.max_steps == 100  # the method's config, checked here
    ```
    """

    method: str = option("sft", "Alignment method.", choices=tuple(METHODS))
    model: str = option(DEFAULT_MODEL, "Hub id, local directory or .gguf file (the default runs offline).")
    safety_data: str = option("builtin:safety@align", "Harmful prompts with refusals to align on.", metavar="SOURCE")
    benign_data: str | None = option("builtin:helpful@train", "Benign instructions mixed in ('' for none): "
                                     "refusal-only data teaches a small model to refuse everything.", metavar="SOURCE")
    benign_answers: str = option("self", "The benign answers trained on: the model's own greedy answers to the "
                                 "benign instructions, generated once and cached (self), or the source's (given).",
                                 choices=BENIGN_ANSWERS)
    benign_max_new_tokens: int = option(80, "Token limit of the model's own benign answers; answers that do not "
                                        "end within it are left out.")
    n_safety: int | None = option(None, "Refusal samples to use (none: the whole split).")
    n_benign: int | None = option(None, "Benign samples (none: as many as refusal samples).")
    probe_data: str = option("beavertails", "Harmful prompts with real harmful answers, for the methods "
                             "that read harmful data (T-Vaccine's probe; RepNoise and TAR when the safety data "
                             "has no compliant answers).", metavar="SOURCE")
    template: str = option(DEFAULT_TEMPLATE, "Prompt template.", choices=TEMPLATES)
    max_length: int = option(200, "Tokens per sample (prompt and answer); longer ones are cut.")
    lora_r: int = option(8, "LoRA rank of the alignment adapter (papers: 8).")
    # Both reference train.py files take their LoRA branch with alpha 1 in alignment too: no alignment
    # script passes --benign_dataset, whose default is non-empty (Lslland/T-Vaccine and git-disl/Vaccine
    # train.py, the LoRA set-up in train(); docs/reference.md). The alpha-4 branch is never run.
    lora_alpha: float = option(1.0, "LoRA alpha of the alignment adapter (the reference scripts run 1).")
    lora_dropout: float = option(0.1, "LoRA dropout.")
    lora_targets: list[str] | None = option(None, "Module names to put LoRA on (none: every projection in the "
                                            "decoder layers).")
    seed: int = option(DEFAULT_SEED, "Seed of the data order, the LoRA initialisation and the method's draws.")
    precision: str = option("auto", "Compute precision: auto (bf16 on a GPU and on a CPU with native bf16, fp32 "
                            "elsewhere), fp32 or bf16.", choices=PRECISIONS)
    dtype: str | None = option(None, "Weights' dtype, overriding the precision's (none: bf16 on a GPU under bf16, "
                               "else fp32).", choices=DTYPES)
    trust_remote_code: bool = option(False, "Allow custom modeling code from the hub.")
    allow_pickle: bool = option(False, "Allow pickled .bin weights (loading a pickle can run code).")
    train: dict = option(factory=dict, help="TrainingArguments fields of the method's config (learning_rate, "
                         "max_steps, per_device_train_batch_size, ...); unset ones keep its defaults.")
    method_options: dict = option(factory=dict, help="The method's own options (rho, layers_per_draw, ...). A run "
                                  "config's align.method_options maps each method or variant to them.")

    def __post_init__(self):
        coerce_fields(self)
        require(self.method in METHODS, f"unknown method {self.method!r}; choose from {', '.join(METHODS)}")
        require(self.template in TEMPLATES, f"unknown template {self.template!r}; choose from {', '.join(TEMPLATES)}")
        require(self.dtype is None or self.dtype in DTYPES, f"unknown dtype {self.dtype!r}; use {', '.join(DTYPES)}")
        require(self.precision in PRECISIONS, f"unknown precision {self.precision!r}; use {', '.join(PRECISIONS)}")
        require(self.benign_answers in BENIGN_ANSWERS,
                f"benign_answers must be one of {', '.join(BENIGN_ANSWERS)}, got {self.benign_answers!r}")
        require(1 <= self.benign_max_new_tokens <= 4096,
                f"benign_max_new_tokens must be in [1, 4096], got {self.benign_max_new_tokens}")
        require(self.max_length >= 8, f"max_length must be >= 8 tokens, got {self.max_length}")
        for name in ("n_safety", "n_benign"):
            value = getattr(self, name)
            require(value is None or value >= 0, f"{name} must be >= 0, got {value}")
        check_lora(self.lora_r, self.lora_alpha, self.lora_dropout)
        # The method's config is built here, once: a bad knob fails now, not after the model loaded.
        self._args = training_arguments(METHODS[self.method][0], train_with_precision(self.precision, self.train),
                                        self.method_options, self.method, seed=self.seed, data_seed=self.seed)

    @property
    def args(self):
        """The method's config (TrainingArguments), built from ``train`` and ``method_options``; read only."""
        return self._args


def benign_instructions(spec: AlignSpec) -> list[dict]:
    """The benign split in the source's order (its answers are needed only with ``benign_answers: given``)."""
    if not spec.benign_data:
        return []
    benign = list(pick_split(load_source(spec.benign_data), "train"))
    if spec.benign_answers == "given":
        require_outputs(benign, spec.benign_data)
    elif not benign:
        raise UserError(f"{spec.benign_data} holds no benign instruction")
    return benign


def alignment_records(spec: AlignSpec, benign: list[dict] | None = None, log=print) -> list[dict]:
    """Refusals on harmful prompts mixed with benign instructions: refusal-only data teaches a
    small model to refuse everything. ``benign`` replaces the source's benign answers (the model's own);
    without it, the source's records are used, so everything but the model's answers is checked
    before the model loads."""
    rng = random.Random(spec.seed)
    # Sources that pair a harmful answer with a refusal (RepNoise / DecodingTrust refusal files) are
    # aligned on the refusal; the built-in rows already are (output == refusal) and keep their compliance.
    safety = [{**r, "compliance": r["output"], "output": r["refusal"]}
              if r.get("refusal") and r["output"] != r["refusal"] else r
              for r in pick_split(load_source(spec.safety_data), "align", "train")]
    require_outputs(safety, spec.safety_data)
    rng.shuffle(safety)
    safety = safety[:spec.n_safety] if spec.n_safety is not None else safety
    records = list(safety)
    if spec.benign_data:
        distilled = benign is not None
        benign = list(benign) if distilled else benign_instructions(spec)
        rng.shuffle(benign)
        wanted = len(safety) if spec.n_benign is None else spec.n_benign
        if wanted > len(benign) and distilled:  # how many answers end on their own is known only now
            log(f"{wanted} benign samples asked for, the model ended {len(benign)} of its answers on its own: "
                f"aligning on those {len(benign)}")
            wanted = len(benign)
        elif wanted > len(benign):
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
    probe = list(pick_split(load_source(spec.probe_data), "harmful", "train"))
    require_outputs(probe, spec.probe_data)
    return probe


def run_alignment(spec: AlignSpec, out: str | Path, overwrite: bool = False, resume: bool = False, log=print,
                  callbacks=()) -> dict:
    """Align ``spec.model`` with ``spec.method``; returns the run summary written to ``summary.json``.

    ```python
    from tvaccine import AlignSpec, run_alignment

    spec = AlignSpec(method="sft", model="tiny-random-llama", n_safety=4, n_benign=4, max_length=512,
                     train={"max_steps": 1})
    summary = run_alignment(spec, "runs/sft")  # runs/sft/adapter holds the adapter and its model card
    assert summary["steps"] == 1
    ```
    """
    run = LoRARun(spec, out, overwrite, resume, log, callbacks, name="alignment")
    since = snapshot()
    records = alignment_records(spec, log=log)  # checks the data before the model loads
    trainer_class = METHODS[spec.method][1]
    harmful_records = harmful_records_for(trainer_class.harmful_data, records, spec)
    with run.folder() as work:
        model, tokenizer = load_for_training(spec)
        provenance = {"source": spec.benign_data or None, "answers": spec.benign_answers}
        if spec.benign_data and spec.benign_answers == "self":
            benign, distilled = self_distilled_benign(spec, model, tokenizer, log)
            provenance.update(distilled)
            records = alignment_records(spec, benign, log)
            write_jsonl(work.path / "benign_answers.jsonl", benign)
        write_json(work.path / "benign_answers.json", provenance)
        num_layers = len(find_decoder_layers(model))
        trainer, tokenized = run.trainer(model, tokenizer, records, trainer_class, spec.lora_alpha, spec.lora_targets,
                                         harmful_dataset=harmful_records)
        log(f"aligning {spec.model} with {spec.method}: {len(tokenized.examples)} samples "
            f"({tokenized.dropped} dropped by truncation), {num_layers} layers")
        summary = {"method": spec.method, "model": spec.model, **run.train(trainer, tokenized),
                   "num_layers": num_layers, "benign_answers": provenance,
                   "final_loss": next((e["loss"] for e in reversed(trainer.state.log_history) if "loss" in e), None),
                   "phases": breakdown(0.0, since)["phases"]}
        layer_history = {"layer_history.json": trainer.layer_history} if hasattr(trainer, "layer_history") else {}
        run.save(trainer, summary, {"training_args.json": json.loads(run.config.to_json_string()), **layer_history})
    return summary


def self_distilled_benign(spec: AlignSpec, model, tokenizer, log) -> tuple[list[dict], dict]:
    """The benign instructions with the model's own greedy answers (cached), and where they came from."""
    with timed("self-distillation"), autocast(spec.precision, model.device):
        return self_distilled(model, tokenizer, benign_instructions(spec), spec.template, spec.benign_max_new_tokens,
                              spec.precision_used, cache_dir() / "self_distilled", log=log)
