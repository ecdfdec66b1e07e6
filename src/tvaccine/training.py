"""The steps every LoRA fine-tuning stage shares, once; ``alignment.py`` and ``attack.py`` are recipes that call
them in order (``LoRARun``: check, open the folder, build the trainer, train, save) and do their own part between.

Everything that needs no model is checked before the model loads, and outputs go to ``<out>.partial``,
renamed at the end (see ``outputs``), so a crash or Ctrl-C never leaves something that looks finished.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import random
import re
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

from tvaccine.config import require
from tvaccine.data.formatting import IGNORE_INDEX, tokenize_records
from tvaccine.errors import UserError
from tvaccine.model_card import write_run_card
from tvaccine.models import add_lora, load_adapter, load_model, merge_adapter, resolve_model, save_adapter
from tvaccine.outputs import OutputDir, check_output_path, partial_dir
from tvaccine.results_io import environment, write_json, write_jsonl
from tvaccine.timing import timed

# Third-party warnings about choices this package makes, not the user, matched on their exact text.
_KNOWN_WARNINGS = ((FutureWarning, "`is_gradient_checkpointing` is deprecated"),
                   (UserWarning, "'pin_memory' argument is set as true but no accelerator is found"))


def check_lora(r: int, alpha: float | None, dropout: float) -> None:
    require(r >= 1, f"lora_r must be >= 1, got {r}")
    require(alpha is None or alpha > 0, f"lora_alpha must be > 0, got {alpha}")
    require(0 <= dropout < 1, f"lora_dropout must be in [0, 1), got {dropout}")


def load_for_training(spec, adapter: str | None = None):
    """The model a stage fine-tunes: the spec's base weights on its training device, with ``adapter``
    (a LoRA adapter directory) merged in when given."""
    with timed("model load"):
        model, tokenizer = load_model(spec.model, spec.weights_dtype, "cpu" if spec.args.use_cpu else None,
                                      trust_remote_code=spec.trust_remote_code, allow_pickle=spec.allow_pickle)
    if adapter:
        model = merge_adapter(load_adapter(model, adapter))
    return model, tokenizer


class LoRARun:
    """One fine-tuning of a fresh LoRA into ``out``, configured by ``spec`` (an AlignSpec or AttackSpec: the model,
    template, max_length, LoRA rank and dropout, seed, precision and the trainer's config ``spec.args``)."""

    def __init__(self, spec, out: str | Path, overwrite: bool, resume: bool, log=print, callbacks=(), name="training"):
        self.spec, self.out, self.overwrite, self.resume, self.log = spec, Path(out), overwrite, resume, log
        self.callbacks, self.name = list(callbacks), name
        check_output_path(self.out)
        resolve_model(spec.model, spec.allow_pickle)  # a wrong model path fails before anything is written
        self.config = copy.copy(spec.args)
        self.config.output_dir = str(partial_dir(self.out))

    @contextmanager
    def folder(self):
        """The output folder (resumed or fresh) with the third-party warnings about our own choices silenced."""
        with OutputDir(self.out, self.overwrite, self.resume, dataclasses.asdict(self.spec), self.config) as work, \
                warnings.catch_warnings():
            for category, text in _KNOWN_WARNINGS:
                warnings.filterwarnings("ignore", message=re.escape(text), category=category)
            if work.resumed_from is not None:
                self.log(f"resuming {self.out} from step {work.resumed_from} (its last checkpoint)")
            self.work = work
            yield work

    def trainer(self, model, tokenizer, records: list[dict], trainer_class, lora_alpha: float,
                lora_targets: list[str] | None = None, **datasets: list[dict]):
        """Tokenize ``records``, put a fresh LoRA on ``model`` and build ``trainer_class`` on them; ``datasets``
        are the trainer's other record sets (``harmful_dataset=...``), tokenized alike and passed in the
        seed's order (empty ones are left out). Returns ``(trainer, tokenized records)``."""
        from datasets import Dataset
        from transformers import DataCollatorForSeq2Seq, set_seed

        spec = self.spec
        model.config.use_cache = False
        tokenized = tokenize_records(records, tokenizer, spec.template, spec.max_length)
        if not tokenized.examples:
            raise UserError(f"no {self.name} sample has a response token left within {spec.max_length} tokens; "
                            "raise max_length")
        set_seed(spec.seed)  # the fresh LoRA's initialisation is part of the run's seed
        model = add_lora(model, spec.lora_r, lora_alpha, spec.lora_dropout, lora_targets)
        extra = {}
        for key, extra_records in datasets.items():
            if extra_records:
                examples = tokenize_records(extra_records, tokenizer, spec.template, spec.max_length).examples
                extra[key] = Dataset.from_list(random.Random(spec.seed).sample(examples, len(examples)))
        collator = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=IGNORE_INDEX)
        trainer = trainer_class(model=model, args=self.config, train_dataset=Dataset.from_list(tokenized.examples),
                                data_collator=collator, processing_class=tokenizer, callbacks=self.callbacks, **extra)
        numeric_log_lines(trainer)
        return trainer, tokenized

    def train(self, trainer, tokenized) -> dict:
        """Train (from the last checkpoint when resuming); returns the summary fields every stage writes. Of a
        resumed run, ``steps`` counts the whole run, the cost only the steps this process ran (``timed_steps``)."""
        start = time.perf_counter()
        with timed("training"):
            trainer.train(resume_from_checkpoint=True if self.resume else None)
        costs = trainer.costs()
        return {"precision": self.spec.precision_used, "samples": len(tokenized.examples),
                "dropped_by_truncation": tokenized.dropped, "wall_s": time.perf_counter() - start,
                **costs, "timed_steps": costs.pop("steps"), "steps": trainer.state.global_step,
                "resumed_from_step": self.work.resumed_from}

    def save(self, trainer, summary: dict, files: dict[str, object]) -> None:
        """The adapter with its card, the stage's ``files`` (``.jsonl``: a list of records, else JSON), the
        training log, the environment and, last, ``summary.json``; only the process that writes does."""
        trainer.model.config.use_cache = True  # the model is handed on for generation
        if not self.work.writer:
            return
        path = self.work.path
        save_adapter(trainer.model, path / "adapter", self.spec.model)
        write_run_card(path / "adapter", self.spec, summary)  # README.md, the card push_to_hub shows
        for name, content in files.items():
            (write_jsonl if name.endswith(".jsonl") else write_json)(path / name, content)
        write_json(path / "train_log.json", trainer.state.log_history)
        write_json(path / "environment.json", environment())
        write_json(path / "summary.json", summary)


def numeric_log_lines(trainer) -> None:
    """The Trainer prints each log as a dict of numbers formatted into quoted strings; print them as
    one JSON object of numbers instead (4 significant digits), so a log line can be read back."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    def line(logs: dict) -> str:
        return json.dumps({k: float(f"{v:.4g}") if isinstance(v, float) else v for k, v in logs.items()
                           if k != "total_flos"})

    class Progress(ProgressCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.is_world_process_zero and self.training_bar is not None:
                self.training_bar.write(line(logs))

    class Printer(PrinterCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.is_local_process_zero:
                print(line(logs))

    for stock, readable in ((ProgressCallback, Progress), (PrinterCallback, Printer)):
        if trainer.pop_callback(stock) is not None:
            trainer.add_callback(readable)

