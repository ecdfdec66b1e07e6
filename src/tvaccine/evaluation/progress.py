"""Scoring a model while it is being attacked, so one attack gives the whole harmful-score curve.

A defense rarely changes where a long attack ends; it shows as a slower rise of the harmful score
on the way there. Evaluating every k optimizer steps inside a single attack gives that curve at
the cost of the evaluations alone. Generation is greedy and leaves the RNG untouched, so the
attack's trajectory is the same with and without these evaluations.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from transformers import TrainerCallback

from tvaccine.config import coerce_fields, option, require
from tvaccine.evaluation.evaluate import EvalSpec, evaluate, score_generations
from tvaccine.evaluation.forward_metrics import FORWARD_KEYS
from tvaccine.results_io import read_jsonl, write_json, write_jsonl
from tvaccine.timing import timed

CURVE_FILE = "progress.jsonl"
CURVE_KEYS = ("harmful_score", "over_refusal", "finetune_accuracy", "harmful_refusal_rate", "harmful_empty_rate",
              *FORWARD_KEYS, "n_harmful", "n_alignment", "n_openings", "n_harmful_answers")
GENERATE = ("ends", "every")
SHARE_KEYS = tuple(f"{verdict}_share" for verdict in ("refused", "complied", "empty", "degenerate"))


def share_keys(scores: dict) -> dict:
    """The four answer shares of a scores.json as flat ``<verdict>_share`` keys (none for old files)."""
    return {f"{verdict}_share": value for verdict, value in (scores.get("answer_shares") or {}).items()}


@dataclass
class ProgressSpec:
    """A fixed subset of the evaluation prompts (the first n of each set), scored every ``every``
    optimizer steps, before the first step and after the last.

    The forward-only metrics (alignment loss, harmful loss, refusal preference, drift) cost a forward
    pass and are measured at every point; generating answers costs minutes, so by default it happens
    at the first and the last point only (``generate: ends``)."""

    every: int = option(5, "Score the model under attack every this many steps (and before the first).")
    generate: str = option("ends", "Generate and judge answers at the first and last point only (ends), or at "
                           "every point (every); the forward-only metrics are measured at every point.",
                           choices=GENERATE)
    n_harmful: int = option(64, "Harmful prompts per point of the curve (64: a standard error of at most 6 points).")
    n_task: int = option(16, "Task prompts per point (0: no fine-tune accuracy on the curve).")
    n_borderline: int = option(16, "Borderline prompts per point (0: no over-refusal on the curve).")

    def __post_init__(self):
        coerce_fields(self)
        require(self.every >= 1, f"every must be >= 1 step, got {self.every}")
        require(self.generate in GENERATE, f"generate must be one of {', '.join(GENERATE)}, got {self.generate!r}")
        require(self.n_harmful >= 1, f"n_harmful must be >= 1, got {self.n_harmful}: the harmful score is the curve")
        for name in ("n_task", "n_borderline"):
            require(getattr(self, name) >= 0, f"{name} must be >= 0, got {getattr(self, name)}")

    def eval_spec(self, base: EvalSpec) -> EvalSpec:
        return dataclasses.replace(base, n_harmful=self.n_harmful, n_task=self.n_task,
                                   n_borderline=self.n_borderline,
                                   task=base.task if self.n_task else None,
                                   borderline=base.borderline if self.n_borderline else None)


class AttackProgressCallback(TrainerCallback):
    """Evaluates the model under attack at steps 0, k, 2k, ... and the last step; each point's
    generations and scores go to ``<out>/step_NNNNN`` and one line per point to ``<out>/progress.jsonl``.

    The forward-only metrics come from ``instrument`` at every point, with the drift measured from the
    model before the attack (the attack's LoRA disabled). Answers are generated where ``generate`` says;
    with ``generate_last`` False the last point's answers are left to the evaluation that follows the
    attack (``fill_last_point``), which scores the same model on a superset of the same prompts.

    Under torchrun only rank 0 evaluates while the other ranks wait at the next all-reduce, so an
    evaluation must finish within the process group's timeout (``ddp_timeout``, 30 min by default);
    sharded training (FSDP, ZeRO-3) is not supported here. A resumed attack keeps the points up to
    its checkpoint and measures the later ones again.
    """

    def __init__(self, spec: EvalSpec, every: int, out: Path, tokenizer, log=print, instrument=None,
                 generate: str = "every", generate_last: bool = True):
        self.spec, self.every, self.out, self.tokenizer, self.log = spec, every, Path(out), tokenizer, log
        self.instrument, self.generate, self.generate_last = instrument, generate, generate_last
        path = self.out / CURVE_FILE
        self.curve = read_jsonl(path) if path.is_file() else []

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        # Resumed: points past the checkpoint belong to the interrupted run and are measured again.
        self.curve = [point for point in self.curve if point["step"] <= state.global_step]
        if self.instrument is not None and state.is_world_process_zero:
            if state.global_step == 0 and not any(point["step"] == 0 for point in self.curve):
                self.instrument.reference_from_next()  # step 0's fresh LoRA leaves the model as it was received
            else:
                with model.disable_adapter():  # the aligned model as the attack received it
                    self.instrument.set_reference(model)
        if state.global_step == 0:
            self._score(model, 0, state)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step % self.every == 0 or state.global_step == state.max_steps:
            self._score(model, state.global_step, state)

    def _generates_at(self, step: int, state) -> bool:
        if step == state.max_steps:
            return self.generate_last
        return self.generate == "every" or step == 0

    def _score(self, model, step: int, state) -> None:
        if not state.is_world_process_zero or any(point["step"] == step for point in self.curve):
            return
        was_training = model.training
        try:
            with timed("progress points"):
                scores = evaluate(model, self.tokenizer, self.spec, self.out / f"step_{step:05d}",
                                  self.instrument, generate=self._generates_at(step, state))
        finally:
            model.train(was_training)
        point = {"step": step, **{k: scores.get(k) for k in CURVE_KEYS}, **share_keys(scores)}
        self.curve.append(point)
        write_jsonl(self.out / CURVE_FILE, self.curve)
        self.log(f"attack step {step}: " + ", ".join(f"{k} {v:.3g}" for k, v in point.items()
                                                     if k != "step" and v is not None))


def fill_last_point(progress_dir: Path, eval_dir: Path, spec: EvalSpec) -> None:
    """The curve's last point gets its answers from the evaluation after the attack: the first n of
    each set, the prompts the point would have generated, are copied into its folder and judged there."""
    progress_dir = Path(progress_dir)
    path = progress_dir / CURVE_FILE
    if not path.is_file():
        return
    curve = read_jsonl(path)
    last = max(curve, key=lambda p: p["step"])
    if last.get("harmful_score") is not None:
        return
    folder = progress_dir / f"step_{last['step']:05d}"
    counts = {"harmful": spec.n_harmful, "task": spec.n_task, "borderline": spec.n_borderline}
    for name, n in counts.items():
        source = Path(eval_dir) / f"generations_{name}.jsonl"
        if not source.is_file() or (name != "harmful" and not getattr(spec, name)):
            continue
        rows = read_jsonl(source)[:n]
        write_jsonl(folder / f"generations_{name}.jsonl", rows)
        meta = Path(eval_dir) / f"generations_{name}.meta.json"
        info = json.loads(meta.read_text()) if meta.is_file() else {}
        info.update(n=len(rows), cut_by_token_limit=sum(bool(r.get("hit_token_limit")) for r in rows),
                    prompts_truncated=sum(bool(r.get("prompt_truncated")) for r in rows), copied_from=str(eval_dir))
        write_json(folder / f"generations_{name}.meta.json", info)
    scores = score_generations(folder, spec)
    last.update({k: scores.get(k) for k in CURVE_KEYS}, **share_keys(scores))
    write_jsonl(path, sorted(curve, key=lambda p: p["step"]))


def read_curve(attack_dir: Path) -> list[dict]:
    """The attack's curve; a point written without the answer shares gets them from its step's scores."""
    folder = Path(attack_dir) / "progress"
    path = folder / CURVE_FILE
    if not path.is_file():
        return []
    curve = sorted(read_jsonl(path), key=lambda p: p["step"])
    for point in curve:
        scores = folder / f"step_{point['step']:05d}" / "scores.json"
        if not all(k in point for k in SHARE_KEYS) and scores.is_file():
            point.update(share_keys(json.loads(scores.read_text())))
    return curve

