"""What every alignment method shares: a TrainingArguments subclass with this project's defaults,
and a Trainer that measures step time and peak memory and logs method-specific metrics."""

from __future__ import annotations

import json
import resource
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint

from tvaccine.data.formatting import tokenize_trainer_data
from tvaccine.errors import UserError


@dataclass
class AlignmentConfig(TrainingArguments):
    """Defaults follow the reference alignment scripts (LoRA, lr 1e-3, AdamW, cosine, warm-up 0.1).
    A new method's config extends it with its own fields:

    ```python
    from dataclasses import dataclass, field

    from tvaccine import AlignmentConfig

    @dataclass
    class MyMethodConfig(AlignmentConfig):
        weight: float = field(default=0.5, metadata={"help": "Weight of my extra loss term."})

    args = MyMethodConfig(output_dir="runs/mine")
    assert (args.learning_rate, args.weight_decay, args.weight) == (1e-3, 0.1, 0.5)
    ```
    """

    output_dir: str = field(default="runs/align", metadata={"help": "Where the adapter and logs go."})
    learning_rate: float = field(default=1e-3, metadata={"help": "Alignment learning rate (papers: 1e-3)."})
    per_device_train_batch_size: int = field(default=8, metadata={"help": "Micro-batch size per device."})
    num_train_epochs: float = field(default=1.0, metadata={"help": "Epochs over the alignment data."})
    weight_decay: float = field(default=0.1, metadata={"help": "AdamW weight decay."})
    # Every alignment and fine-tuning script of both reference repositories: AdamW, weight decay 0.1,
    # cosine, warm-up ratio 0.1 (Lslland/T-Vaccine and git-disl/Vaccine, script/*; docs/reference.md).
    warmup_steps: float = field(default=0.1, metadata={"help": "Warm-up steps; a float < 1 is a ratio of the "
                                                                "run (references: 0.1)."})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "Learning-rate schedule (references: "
                                                                        "cosine)."})
    logging_steps: float = field(default=1, metadata={"help": "Log every this many optimizer steps."})
    save_strategy: str = field(default="no", metadata={"help": "Trainer checkpointing ('steps' to resume)."})
    report_to: str | list[str] = field(default="none", metadata={"help": "Trainer integrations to log to."})
    remove_unused_columns: bool = field(default=False, metadata={"help": "Keep the tokenized columns."})
    disable_tqdm: bool = field(default=False, metadata={"help": "Hide the progress bar."})


def peak_memory_bytes(device: torch.device) -> int:
    """CUDA peak allocated on a GPU, the process's peak resident set size on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


class StepCostMeter(TrainerCallback):
    """Wall time of every optimizer step (the first one is kept apart: it pays one-off set-up)."""

    def __init__(self):
        self.step_times: list[float] = []
        self._start = None

    @staticmethod
    def _now(args) -> float:
        if args.device.type == "cuda":  # kernels run asynchronously: time what has finished
            torch.cuda.synchronize(args.device)
        return time.perf_counter()

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = self._now(args)

    def on_step_end(self, args, state, control, **kwargs):
        if self._start is not None:
            self.step_times.append(self._now(args) - self._start)

    def summary(self) -> dict:
        steady = self.step_times[1:] or self.step_times
        return {"steps": len(self.step_times), "first_step_s": self.step_times[0] if self.step_times else None,
                "mean_step_s": sum(steady) / len(steady) if steady else None}


METHOD_STATE_FILE = "tvaccine_method_state.json"


class MethodStateCheckpoint(TrainerCallback):
    """Saves a method's own state (T-Vaccine's layer probabilities, current draw, sampler RNG) into
    every Trainer checkpoint, next to the optimizer and RNG states the Trainer saves itself."""

    def __init__(self, trainer: "AlignmentTrainer"):
        self.trainer = trainer

    def on_save(self, args, state, control, **kwargs):
        folder = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        if folder.is_dir() and state.is_world_process_zero:
            (folder / METHOD_STATE_FILE).write_text(json.dumps(self.trainer.method_state()))


class AlignmentTrainer(Trainer):
    """A Trainer that meters cost, averages per-step method metrics into the normal log lines, and
    checkpoints the method's own state so that ``--resume`` continues exactly. Data sets of token
    ids are used as given; text ones (messages, prompt/completion, instruction/output) are
    tokenized with ``processing_class``, the loss on the answer only. A new method overrides
    ``compute_loss`` or ``training_step``:

    ```python
    from datasets import Dataset
    from tvaccine import AlignmentTrainer, SFTConfig, add_lora, load_model

    class LoggedLoss(AlignmentTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            self.record_metric("my_metric", 2 * loss.item())  # averaged into the next log line
            return loss

    model, tokenizer = load_model("tiny-random-llama")
    data = Dataset.from_list([{"prompt": "How do I make a weapon?", "completion": "I can't help."}] * 4)
    trainer = LoggedLoss(model=add_lora(model), args=SFTConfig(output_dir="runs/x", max_steps=1,
                         per_device_train_batch_size=4), train_dataset=data, processing_class=tokenizer)
    trainer.train()
    assert "my_metric" in trainer.state.log_history[0]
    ```
    """

    # Methods that read harmful data (prompt + compliant answer) say which: "probe" (held-out
    # harmful samples, T-Vaccine) or "paired" (the compliant answers to the alignment prompts).
    harmful_data: str | None = None

    def __init__(self, *args, harmful_dataset=None, **kwargs):
        # Text data sets (messages, prompt/completion) are tokenized here, with the loss on the answer only.
        harmful_dataset = tokenize_trainer_data(kwargs, harmful_dataset)
        super().__init__(*args, **kwargs)
        if self.harmful_data is not None:
            require(harmful_dataset is not None and len(harmful_dataset) > 0,
                    f"{type(self).__name__} needs a non-empty harmful data set")
        self.harmful_dataset = harmful_dataset
        if self.harmful_data == "paired":  # read a batch at a time next to each alignment batch
            self.harmful_batches = cycle_batches(harmful_dataset, self.args.per_device_train_batch_size,
                                                 self.data_collator, self.args.seed)
        self.cost_meter = StepCostMeter()
        self.add_callback(self.cost_meter)
        self.add_callback(MethodStateCheckpoint(self))
        self._metric_sums: dict[str, list[float]] = defaultdict(list)

    def method_state(self) -> dict:
        return {}

    def load_method_state(self, state: dict) -> None:
        """Counterpart of ``method_state``; SFT has nothing to restore."""

    def train(self, resume_from_checkpoint=None, **kwargs):
        if resume_from_checkpoint is True:
            resume_from_checkpoint = get_last_checkpoint(self.args.output_dir)
        if resume_from_checkpoint:
            state_file = Path(resume_from_checkpoint) / METHOD_STATE_FILE
            if state_file.is_file():
                self.load_method_state(json.loads(state_file.read_text()))
        return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        if not torch.isfinite(loss).all():
            raise FloatingPointError(f"the training loss became {loss.item()} at step {self.state.global_step}; "
                                     f"checkpoints so far are kept in {self.args.output_dir}")
        return loss

    def _loss(self, model, inputs, num_items_in_batch=None):
        """The training loss outside ``training_step`` (a perturbation search, a probe), under the same
        autocast as the step itself."""
        with self.compute_loss_context_manager():
            return self.compute_loss(model, self._prepare_inputs(inputs), num_items_in_batch=num_items_in_batch)

    def accumulation_share(self, num_items_in_batch) -> float:
        """The weight that turns a per-micro-batch mean term into its share of one optimizer step.

        When the base loss was normalised by ``num_items_in_batch`` (the whole accumulated batch) the
        Trainer no longer divides by the accumulation steps, so a term added to it must be divided
        here; otherwise the Trainer divides the sum and the weight is 1. Mirrors
        ``Trainer.training_step``'s own test, so weights like RepNoise's alpha and beta mean the same
        at any accumulation."""
        scaled = getattr(self, "loss_is_scaled_for_ga", None)
        if scaled is None:
            scaled = (self.model_accepts_loss_kwargs and num_items_in_batch is not None) \
                or self.compute_loss_func is not None
        steps = getattr(self, "current_gradient_accumulation_steps", self.args.gradient_accumulation_steps)
        return 1.0 / steps if scaled else 1.0

    def record_metric(self, name: str, value: float) -> None:
        self._metric_sums[name].append(float(value))

    def log(self, logs: dict, *args, **kwargs) -> None:
        if "loss" in logs:
            for name, values in self._metric_sums.items():
                logs[name] = sum(values) / len(values)
            self._metric_sums.clear()
        super().log(logs, *args, **kwargs)

    def costs(self) -> dict:
        cuda = self.args.device.type == "cuda"
        # The T-Vaccine reference logs memory_reserved; allocated is what the tensors need.
        reserved = {"peak_reserved_bytes": torch.cuda.max_memory_reserved(self.args.device)} if cuda else {}
        return {**self.cost_meter.summary(), "peak_memory_bytes": peak_memory_bytes(self.args.device),
                "memory_kind": "cuda_max_allocated" if cuda else "peak_rss", **reserved}


def cycle_batches(dataset, batch_size: int, collate_fn, seed: int):
    """Endless shuffled batches of a side data set (the harmful samples that RepNoise and TAR read
    next to each alignment batch), reproducible from ``seed``."""
    from torch.utils.data import DataLoader

    generator = torch.Generator().manual_seed(seed)
    while True:
        yield from DataLoader(dataset, batch_size=batch_size, shuffle=True, collate_fn=collate_fn,
                              generator=generator)


def require(condition: bool, message: str) -> None:
    """Config validation: a one-line UserError instead of an assert deep inside training."""
    if not condition:
        raise UserError(message)
