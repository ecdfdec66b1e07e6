"""The harmful fine-tuning attack: a user fine-tunes the aligned model on task data of which a
fraction p is harmful. As in the papers, the alignment LoRA is merged first and a fresh LoRA is
trained with plain SFT."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

from tvaccine.alignment import finish_output_dir, shared_work_dir
from tvaccine.data.formatting import TEMPLATES, tokenize_records
from tvaccine.data.mixture import build_mixture
from tvaccine.data.sources import load_source, pick_split
from tvaccine.errors import UserError
from tvaccine.evaluation.evaluate import EvalSpec, evaluation_sets
from tvaccine.evaluation.judges import check_judge
from tvaccine.methods import SFTConfig, SFTTrainer
from tvaccine.models import DEFAULT_MODEL, add_lora, check_adapter, load_adapter, load_model, merge_adapter, save_adapter
from tvaccine.records import environment, write_json, write_jsonl


@dataclass
class AttackSpec:
    """Paper defaults: n=1000, p=0.1, lr 1e-5, 20 epochs, batch 10, cosine, warm-up 0.1, length 200."""

    model: str = DEFAULT_MODEL
    aligned_adapter: str | None = None  # None: attack the non-aligned model
    task: str = "builtin:sentiment"
    harmful: str = "builtin:safety@harmful"
    eval_harmful: str = "builtin:safety@eval"  # checked for overlap with the harmful training prompts
    n: int = 1000
    p: float = 0.1
    learning_rate: float = 1e-5
    epochs: float = 20.0
    max_steps: int | None = None
    batch_size: int = 10
    warmup_ratio: float = 0.1
    lr_scheduler: str = "cosine"
    max_length: int = 200
    template: str = "alpaca"
    lora_r: int = 8
    lora_alpha: int = 4
    lora_dropout: float = 0.1
    seed: int = 42
    dtype: str | None = None
    use_cpu: bool = False
    save_steps: int | None = None  # checkpoint every this many steps, so that --resume can continue
    eval_every: int | None = None  # score the model under attack every this many steps: the HS curve
    progress_eval: EvalSpec | None = None  # what those evaluations score (a small fixed prompt subset)
    allow_pickle: bool = False
    trust_remote_code: bool = False

    def validate(self) -> None:
        if not 0 <= self.p <= 1:
            raise UserError(f"harmful ratio p must be in [0, 1], got {self.p}")
        if self.n < 1:
            raise UserError(f"n must be >= 1, got {self.n}")
        if self.learning_rate <= 0:
            raise UserError(f"attack learning rate must be > 0, got {self.learning_rate}")
        if self.batch_size < 1:
            raise UserError(f"attack batch size must be >= 1, got {self.batch_size}")
        if self.max_steps is not None and self.max_steps < 1:
            raise UserError(f"attack max steps must be >= 1, got {self.max_steps}")
        if self.template not in TEMPLATES:
            raise UserError(f"unknown template {self.template!r}")
        if self.eval_every is not None:
            if self.eval_every < 1:
                raise UserError(f"attack evaluation interval must be >= 1 step, got {self.eval_every}")
            if not isinstance(self.progress_eval, EvalSpec):
                raise UserError("evaluating during the attack needs an evaluation spec (progress_eval)")
            self.progress_eval.validate()
            evaluation_sets(self.progress_eval)
            check_judge(self.progress_eval.judge)
        if self.aligned_adapter:
            check_adapter(self.aligned_adapter)


def attack_mixture(spec: AttackSpec) -> list[dict]:
    benign = pick_split(load_source(spec.task), "train")
    harmful = pick_split(load_source(spec.harmful), "harmful", "train")
    eval_prompts = pick_split(load_source(spec.eval_harmful), "eval", "test") if spec.eval_harmful else []
    return build_mixture(benign, harmful, spec.n, spec.p, spec.seed, eval_prompts)


def load_aligned(spec: AttackSpec):
    """The model the user receives: base weights with the alignment LoRA merged in."""
    model, tokenizer = load_model(spec.model, dtype=spec.dtype, device="cpu" if spec.use_cpu else None,
                                  allow_pickle=spec.allow_pickle, trust_remote_code=spec.trust_remote_code)
    if spec.aligned_adapter:
        model = merge_adapter(load_adapter(model, spec.aligned_adapter))
    return model, tokenizer


def run_attack(spec: AttackSpec, out: str | Path, overwrite: bool = False, resume: bool = False, callbacks=(),
               log=print):
    """Fine-tune on the mixture; returns ``(model with attack LoRA, tokenizer, summary)``."""
    from datasets import Dataset
    from transformers import set_seed
    from transformers import DataCollatorForSeq2Seq

    spec.validate()
    out = Path(out)
    mixture = attack_mixture(spec)
    config = SFTConfig(output_dir=str(out), learning_rate=spec.learning_rate, num_train_epochs=spec.epochs,
                       max_steps=spec.max_steps or -1, per_device_train_batch_size=spec.batch_size,
                       warmup_steps=spec.warmup_ratio, lr_scheduler_type=spec.lr_scheduler, weight_decay=0.0,
                       seed=spec.seed, data_seed=spec.seed, use_cpu=spec.use_cpu,
                       save_strategy="steps" if spec.save_steps else "no", save_steps=spec.save_steps or 500,
                       save_total_limit=2)
    partial = shared_work_dir(config, out, overwrite, dataclasses.asdict(spec), resume)
    config.output_dir = str(partial)
    model, tokenizer = load_aligned(spec)
    model.config.use_cache = False
    tokenized = tokenize_records(mixture, tokenizer, spec.template, spec.max_length)
    if not tokenized.examples:
        raise UserError(f"no attack sample has a response token left within {spec.max_length} tokens; "
                        "raise max_length")
    set_seed(spec.seed)  # the fresh LoRA's initialisation is part of the run's seed
    model = add_lora(model, spec.lora_r, spec.lora_alpha, spec.lora_dropout)
    trainer = SFTTrainer(model=model, args=config, train_dataset=Dataset.from_list(tokenized.examples),
                         data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100),
                         processing_class=tokenizer, callbacks=list(callbacks))
    if spec.eval_every:
        from tvaccine.evaluation.progress import AttackProgressCallback

        # Added after the trainer's own step-time meter, so evaluation time is not counted as step time.
        trainer.add_callback(AttackProgressCallback(spec.progress_eval, spec.eval_every, partial / "progress",
                                                    tokenizer, log))
    harmful_count = sum(r["is_harmful"] for r in mixture)
    log(f"attacking {spec.aligned_adapter or 'the non-aligned model'}: n={spec.n}, p={spec.p} "
        f"({harmful_count} harmful), {len(tokenized.examples)} samples kept")
    start = time.perf_counter()
    trainer.train(resume_from_checkpoint=True if resume else None)
    summary = {"n": spec.n, "p": spec.p, "harmful_samples": harmful_count, "samples": len(tokenized.examples),
               "dropped_by_truncation": tokenized.dropped, "steps": trainer.state.global_step,
               "wall_s": time.perf_counter() - start, **trainer.costs()}
    model = trainer.model
    model.config.use_cache = True
    if config.process_index != 0:
        return model, tokenizer, summary
    save_adapter(model, partial / "adapter", spec.model)
    write_jsonl(partial / "mixture.jsonl", mixture)
    write_json(partial / "train_log.json", trainer.state.log_history)
    write_json(partial / "environment.json", environment())
    write_json(partial / "summary.json", summary)
    finish_output_dir(partial, out)
    return model, tokenizer, summary
