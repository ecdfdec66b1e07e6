"""The harmful fine-tuning attack: a user fine-tunes the aligned model on task data of which a
fraction p is harmful. As in the papers, the alignment LoRA is merged first and a fresh LoRA is
trained with plain SFT, with the papers' fine-tuning hyper-parameters as defaults (``AttackConfig``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tvaccine.config import DEFAULT_SEED, DEFAULT_TEMPLATE, DTYPES, coerce_fields, option, require, training_arguments
from tvaccine.data.formatting import TEMPLATES
from tvaccine.data.mixture import build_mixture
from tvaccine.data.sources import load_source, parse_spec, pick_split
from tvaccine.evaluation.evaluate import EVAL_HARMFUL, EvalSpec, evaluation_sets, forward_instrument
from tvaccine.evaluation.progress import GENERATE, AttackProgressCallback
from tvaccine.methods import SFTConfig, SFTTrainer
from tvaccine.models import DEFAULT_MODEL, check_adapter
from tvaccine.precision import PRECISIONS, SpecPrecision, train_with_precision
from tvaccine.training import LoRARun, check_lora, load_for_training


@dataclass
class AttackConfig(SFTConfig):
    """The attacker's fine-tuning, as in the papers' fine-tuning scripts: lr 1e-5, 20 epochs, batch 10.
    AdamW with weight decay 0.1 and a cosine schedule warmed up over 10% of the steps are the alignment
    defaults too (the references use them in every script), inherited from ``AlignmentConfig``."""

    output_dir: str = field(default="runs/attack", metadata={"help": "Where the attack adapter and logs go."})
    learning_rate: float = field(default=1e-5, metadata={"help": "Attack learning rate (papers: 1e-5)."})
    num_train_epochs: float = field(default=20.0, metadata={"help": "Epochs over the attack data (papers: 20)."})
    per_device_train_batch_size: int = field(default=10, metadata={"help": "Micro-batch size (papers: 10)."})


@dataclass
class AttackSpec(SpecPrecision):
    """Everything that defines one attack; saved next to its adapter as ``spec.json``.

    ```python
    from tvaccine import AttackSpec

    spec = AttackSpec(aligned_adapter=None, task="builtin:sentiment", n=1000, p=0.1)
    assert round(spec.n * spec.p) == 100  # harmful samples in the user's data
    ```
    """

    model: str = option(DEFAULT_MODEL, "Hub id, local directory or .gguf file (the default runs offline).")
    aligned_adapter: str | None = option(None, "The alignment LoRA adapter to merge first (none: attack the "
                                         "non-aligned model).", flag="adapter", metavar="DIR")
    task: str = option("builtin:sentiment", "The user's benign fine-tuning task.", metavar="SOURCE")
    harmful_data: str = option("beavertails", "Harmful prompts with real harmful answers mixed into the fine-tuning "
                               "data (BeaverTails' train split, never its probe rows).", metavar="SOURCE")
    eval_harmful: str | None = option(EVAL_HARMFUL, "The harmful evaluation prompts: none of them may be trained on "
                                      "(checked).", metavar="SOURCE")
    n: int = option(1000, "Fine-tuning samples (papers: 1000).")
    p: float = option(0.1, "Harmful ratio: round(p*n) of the n samples are harmful (papers: 0.1).")
    max_length: int = option(200, "Tokens per sample; longer ones are cut.")
    template: str = option(DEFAULT_TEMPLATE, "Prompt template.", choices=TEMPLATES)
    lora_r: int = option(8, "LoRA rank of the attack's fresh adapter (papers: 8).")
    lora_alpha: float | None = option(None, "LoRA alpha of the attack's adapter (none: the papers' scripts, 0.5 "
                                      "for a GSM8K task and 1 otherwise).")
    lora_dropout: float = option(0.1, "LoRA dropout.")
    seed: int = option(DEFAULT_SEED, "Seed of the mixture, the LoRA initialisation and the data order.")
    precision: str = option("auto", "Compute precision: auto (bf16 on a GPU and on a CPU with native bf16, fp32 "
                            "elsewhere), fp32 or bf16.", choices=PRECISIONS)
    dtype: str | None = option(None, "Weights' dtype, overriding the precision's (none: bf16 on a GPU under bf16, "
                               "else fp32).", choices=DTYPES)
    trust_remote_code: bool = option(False, "Allow custom modeling code from the hub.")
    allow_pickle: bool = option(False, "Allow pickled .bin weights (loading a pickle can run code).")
    train: dict = option(factory=dict, help="TrainingArguments fields (learning_rate, num_train_epochs, max_steps, "
                         "per_device_train_batch_size, ...); unset ones keep AttackConfig's (the papers') defaults.")
    eval_every: int | None = option(None, "Score the model every this many steps (and before the first): the "
                                    "harmful-score curve of the attack.")
    progress_eval: EvalSpec | None = option(None, "What those evaluations score (a small fixed subset of prompts).")
    progress_generate: str = option("ends", "Where the progress evaluation generates answers: at the first and last "
                                    "point (ends) or at every point (every); forward-only metrics at every point.",
                                    choices=GENERATE)

    def __post_init__(self):
        coerce_fields(self)
        require(0 <= self.p <= 1, f"harmful ratio p must be in [0, 1], got {self.p}")
        require(self.n >= 1, f"n must be >= 1, got {self.n}")
        require(self.max_length >= 8, f"max_length must be >= 8 tokens, got {self.max_length}")
        require(self.template in TEMPLATES, f"unknown template {self.template!r}; choose from {', '.join(TEMPLATES)}")
        require(self.dtype is None or self.dtype in DTYPES, f"unknown dtype {self.dtype!r}; use {', '.join(DTYPES)}")
        require(self.precision in PRECISIONS, f"unknown precision {self.precision!r}; use {', '.join(PRECISIONS)}")
        check_lora(self.lora_r, self.lora_alpha, self.lora_dropout)
        require(self.eval_every is None or self.eval_every >= 1,
                f"the attack's evaluation interval must be >= 1 step, got {self.eval_every}")
        require((self.eval_every is None) == (self.progress_eval is None),
                "evaluating during the attack needs both eval_every and progress_eval")
        if self.aligned_adapter:
            check_adapter(self.aligned_adapter)
        self._args = training_arguments(AttackConfig, train_with_precision(self.precision, self.train), {},
                                        "the attack", seed=self.seed, data_seed=self.seed)

    @property
    def args(self) -> AttackConfig:
        """The attack's TrainingArguments, built once from ``train``; read only."""
        return self._args

    def resolved_lora_alpha(self) -> float:
        """``lora_alpha``, or the papers' rule when it is unset: 0.5 on GSM8K, 1 on every other task."""
        if self.lora_alpha is not None:
            return self.lora_alpha
        return 0.5 if parse_spec(self.task)[0] == "gsm8k" else 1.0


def attack_mixture(spec: AttackSpec) -> list[dict]:
    benign = pick_split(load_source(spec.task), "train")
    harmful = pick_split(load_source(spec.harmful_data), "harmful", "train")
    eval_prompts = pick_split(load_source(spec.eval_harmful), "eval", "test") if spec.eval_harmful else []
    if spec.progress_eval is not None and spec.progress_eval.forward_harmful:  # the instrument's answers too
        from tvaccine.evaluation.forward_metrics import instrument_sets

        eval_prompts = [*eval_prompts, *instrument_sets(None, spec.progress_eval.forward_harmful,
                                                        spec.progress_eval.n_forward)["harmful"]]
    return build_mixture(benign, harmful, spec.n, spec.p, spec.seed, eval_prompts)


def load_aligned(spec: AttackSpec):
    """The model the user receives: base weights with the alignment LoRA merged in."""
    return load_for_training(spec, spec.aligned_adapter)


def run_attack(spec: AttackSpec, out: str | Path, overwrite: bool = False, resume: bool = False, callbacks=(),
               log=print, generate_last: bool = True):
    """Fine-tune on the mixture; returns ``(model with attack LoRA, tokenizer, summary)``.

    ```python
    from tvaccine import AttackSpec, run_attack

    spec = AttackSpec(model="tiny-random-llama", n=10, p=0.2, max_length=512, train={"max_steps": 1})
    model, tokenizer, summary = run_attack(spec, "runs/attack")
    assert summary["harmful_samples"] == 2
    ```

    With ``generate_last`` False the progress curve's last point leaves its answers to the evaluation that
    follows (``tvaccine run`` does that: the same model, a superset of the same prompts)."""
    run = LoRARun(spec, out, overwrite, resume, log, callbacks, name="attack")
    mixture = attack_mixture(spec)
    if spec.eval_every:
        evaluation_sets(spec.progress_eval)  # its sources load before the model does
    with run.folder() as work:
        model, tokenizer = load_aligned(spec)
        trainer, tokenized = run.trainer(model, tokenizer, mixture, SFTTrainer, spec.resolved_lora_alpha())
        if spec.eval_every:
            # Added after the trainer's own step-time meter, so evaluation time is not counted as step time.
            instrument = forward_instrument(spec.progress_eval, tokenizer)
            trainer.add_callback(AttackProgressCallback(spec.progress_eval, spec.eval_every, work.path / "progress",
                                                        tokenizer, log, instrument, spec.progress_generate,
                                                        generate_last))
        harmful_count = sum(r["is_harmful"] for r in mixture)
        log(f"attacking {spec.aligned_adapter or 'the non-aligned model'}: n={spec.n}, p={spec.p} "
            f"({harmful_count} harmful), {len(tokenized.examples)} samples kept")
        summary = {"n": spec.n, "p": spec.p, "harmful_samples": harmful_count,
                   "lora_alpha": spec.resolved_lora_alpha(), **run.train(trainer, tokenized)}
        run.save(trainer, summary, {"mixture.jsonl": mixture})
    return trainer.model, tokenizer, summary
