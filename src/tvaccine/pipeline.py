"""``tvaccine run``: the whole comparison from one config.

methods x attack settings -> align (once per method) -> attack -> evaluate -> collect -> report.
Every stage writes its spec next to its outputs; a rerun skips a stage whose outputs exist and
whose spec is unchanged, and redoes it otherwise.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import multiprocessing
import shutil
import time
from importlib import resources
from pathlib import Path

import yaml

from tvaccine.alignment import AlignSpec, run_alignment
from tvaccine.attack import AttackSpec, attack_mixture, load_aligned, run_attack
from tvaccine.errors import UserError
from tvaccine.evaluation.evaluate import EvalSpec, evaluate, evaluation_sets
from tvaccine.evaluation.judges import check_judge
from tvaccine.evaluation.progress import ProgressSpec, read_curve
from tvaccine.evaluation.robustness import summarize
from tvaccine.methods import METHODS
from tvaccine.models import merge_adapter
from tvaccine.records import environment, read_jsonl, write_json, write_jsonl, write_text

NON_ALIGNED = "none"
PRESETS = ("smoke", "cpu", "paper")


def load_config(preset: str | None = None, path: str | None = None) -> dict:
    if path:
        file = Path(path)
        if not file.is_file():
            raise UserError(f"config file not found: {path}")
        try:
            config = yaml.safe_load(file.read_text())
        except yaml.YAMLError as exc:
            raise UserError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    else:
        preset = preset or "cpu"
        if preset not in PRESETS:
            raise UserError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
        config = yaml.safe_load((resources.files("tvaccine") / "presets" / f"{preset}.yaml").read_text())
    if not isinstance(config, dict):
        raise UserError(f"{path or preset}: the config must be a mapping")
    return config


def _dataclass_from(cls, values: dict, where: str):
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise UserError(f"unknown field(s) in {where}: {', '.join(unknown)}")
    return cls(**values)


class Plan:
    """The resolved, validated experiment: built completely before any model is loaded."""

    def __init__(self, config: dict):
        config = copy.deepcopy(config)
        known = {"name", "model", "seed", "methods", "align", "attack", "evaluate", "evaluate_before_attack",
                 "isolate_alignment", "progress"}
        unknown = sorted(set(config) - known)
        if unknown:
            raise UserError(f"unknown top-level field(s) in the run config: {', '.join(unknown)}")
        self.config = config
        self.model = config.get("model", "smollm2-135m-instruct")
        self.seed = int(config.get("seed", 42))
        self.methods = config.get("methods", [NON_ALIGNED, "sft", "vaccine", "t-vaccine"])
        align = dict(config.get("align", {}))
        options = align.pop("method_options", {})
        # A label that is not a method names a variant: `method_options: {tv-s15: {method: t-vaccine, ...}}`.
        self.base_methods = {}
        for method in self.methods:
            named = options.get(method, {}).get("method")
            if method in METHODS and named not in (None, method):
                raise UserError(f"method_options.{method}.method: {method!r} is a method itself; "
                                f"name the variant differently")
            base = method if method in METHODS or method == NON_ALIGNED else named
            if base not in METHODS and not (method == NON_ALIGNED and base == NON_ALIGNED):
                raise UserError(f"unknown method {method!r} in the run config; choose from "
                                f"{', '.join([NON_ALIGNED, *METHODS])}, or define it as a variant in "
                                f"align.method_options with a `method:` key")
            self.base_methods[method] = base
        if len(set(self.methods)) != len(self.methods):
            raise UserError("the run config lists a method twice")
        self.evaluate_before_attack = bool(config.get("evaluate_before_attack", False))
        # One process per alignment makes each method's peak memory its own; a smoke run on a tiny
        # model can skip the process start-up (its memory column is then the run's running peak).
        self.isolate_alignment = bool(config.get("isolate_alignment", True))
        self.align_specs = {}
        for method in self.methods:
            if method == NON_ALIGNED:
                continue
            own = {k: v for k, v in options.get(method, {}).items() if k != "method"}
            train = {**align.get("train", {}), **own}
            spec = _dataclass_from(AlignSpec, {**align, "train": train, "method": self.base_methods[method],
                                               "model": self.model, "seed": self.seed}, "align")
            spec.validate()
            spec.method_config("/tmp/unused")  # validates the method's options now
            self.align_specs[method] = spec
        attack = dict(config.get("attack", {}))
        for key in ("eval_every", "progress_eval"):
            if key in attack:
                raise UserError(f"attack.{key}: set the attack-progress evaluation in the top-level `progress` section")
        self.progress = None
        if config.get("progress") is not None:
            if not isinstance(config["progress"], dict):
                raise UserError("`progress` must be a mapping (every, n_harmful, n_task, n_borderline)")
            self.progress = _dataclass_from(ProgressSpec, config["progress"], "progress")
            self.progress.validate()
        sweep = {k: v for k, v in attack.items() if isinstance(v, list)}
        self.settings = []
        for values in itertools.product(*sweep.values()) if sweep else [()]:
            setting = {**attack, **dict(zip(sweep, values))}
            spec = _dataclass_from(AttackSpec, {**setting, "model": self.model, "seed": self.seed}, "attack")
            spec.validate()
            self.settings.append(spec)
        self.eval_spec = _dataclass_from(EvalSpec, {**config.get("evaluate", {})}, "evaluate")
        self.eval_spec.validate()
        for spec in self.settings:
            # The harmful prompts that are scored must not be trained on.
            spec.eval_harmful = self.eval_spec.harmful
            if self.progress:
                spec.eval_every = self.progress.every
                # A subset of the evaluation below: its sources, sizes and judge are checked there.
                spec.progress_eval = self.progress.eval_spec(self.eval_spec_for(spec))
            evaluation_sets(self.eval_spec_for(spec))  # every evaluation source loads
            attack_mixture(spec)  # counts, ratios and train/eval overlap are checked now
        check_judge(self.eval_spec.judge)

    def eval_spec_for(self, attack: AttackSpec) -> EvalSpec:
        """Fine-tune accuracy is measured on the task the attack fine-tuned on, unless the config
        names an evaluation task."""
        return dataclasses.replace(self.eval_spec, task=self.eval_spec.task or attack.task)

    @staticmethod
    def setting_name(spec: AttackSpec) -> str:
        task = spec.task.split(":")[-1].split("@")[0].split("/")[-1]
        return (f"{task}_p{spec.p:g}_n{spec.n}_lr{spec.learning_rate:g}_"
                f"steps{spec.max_steps or f'{spec.epochs:g}ep'}")


def _same_spec(directory: Path, spec: dict, marker: str) -> bool:
    spec_file = directory / "spec.json"
    return (directory / marker).is_file() and spec_file.is_file() and \
        _location_free(json.loads(spec_file.read_text())) == _location_free(json.loads(json.dumps(spec, default=str)))


def _location_free(spec: dict) -> dict:
    """An attack records its aligned adapter's path; inside a results directory only ``align/<method>/adapter``
    matters (a redone alignment deletes the attacks on the old one), so a copied or moved results
    directory still reuses its stages."""
    spec = dict(spec)
    for key in ("aligned_adapter", "adapter"):  # an attack's, a before-attack evaluation's
        adapter = spec.get(key)
        if isinstance(adapter, str) and Path(adapter).parts[-3:-2] == ("align",):
            spec[key] = "/".join(Path(adapter).parts[-3:])
    return spec


def _align_in_subprocess(spec: AlignSpec, out: Path) -> None:
    """Each alignment in its own process: peak memory is then that method's own, not the maximum
    over everything this run did before."""
    context = multiprocessing.get_context("spawn")
    import torch

    process = context.Process(target=_align_child, args=(spec, str(out), torch.get_num_threads()))
    process.start()
    process.join()
    if process.exitcode == 2:
        raise UserError(f"alignment with {spec.method} refused its configuration (message above)")
    if process.exitcode != 0:
        raise RuntimeError(f"alignment with {spec.method} failed (exit code {process.exitcode}); see the log above")


def _align_child(spec: AlignSpec, out: str, threads: int) -> None:
    import sys

    import torch

    torch.set_num_threads(threads)  # the parent's choice, not the library default
    try:
        run_alignment(spec, out, overwrite=True)
    except UserError as exc:
        print(f"tvaccine: error: {exc}", file=sys.stderr)
        sys.exit(2)


def run_experiment(config: dict, results: str | Path, log=print) -> list[dict]:
    plan = Plan(config)
    results = Path(results)
    results.mkdir(parents=True, exist_ok=True)
    write_text(results / "run_config.yaml", yaml.safe_dump(plan.config, sort_keys=False))
    write_json(results / "environment.json", environment())
    start = time.perf_counter()
    rows = []
    for method in plan.methods:
        align_dir = results / "align" / method
        adapter = None
        align_summary = {}
        if method != NON_ALIGNED:
            spec = plan.align_specs[method]
            if _same_spec(align_dir, dataclasses.asdict(spec), "summary.json"):
                log(f"[{method}] alignment found in {align_dir}, reused")
            else:
                # A new alignment invalidates everything measured on the old one.
                for stale in (results / "attack" / method, results / "before_attack" / method):
                    shutil.rmtree(stale, ignore_errors=True)
                if plan.isolate_alignment:
                    _align_in_subprocess(spec, align_dir)
                else:
                    run_alignment(spec, align_dir, overwrite=True, log=log)
            adapter = str(align_dir / "adapter")
            align_summary = json.loads((align_dir / "summary.json").read_text())
        before = {}
        if plan.evaluate_before_attack:
            before = _evaluate_stage(plan, plan.eval_spec_for(plan.settings[0]), results / "before_attack" / method,
                                     adapter, log)
        for attack in plan.settings:
            attack = dataclasses.replace(attack, aligned_adapter=adapter)
            attack_dir = results / "attack" / method / Plan.setting_name(attack)
            scores = _attack_and_evaluate(plan, attack, attack_dir, log)
            curve = read_curve(attack_dir)
            rows.append({"method": method, "base_method": plan.base_methods[method],
                         "setting": Plan.setting_name(attack), "p": attack.p, "n": attack.n,
                         "attack_lr": attack.learning_rate, "attack_steps": scores.pop("attack_steps", None),
                         "curve": curve, **summarize(curve),
                         **{f"after_{k}": v for k, v in scores.items()},
                         **{f"before_{k}": v for k, v in before.items()},
                         "align_peak_memory_bytes": align_summary.get("peak_memory_bytes"),
                         "align_memory_kind": align_summary.get("memory_kind"),
                         "align_mean_step_s": align_summary.get("mean_step_s"),
                         "align_final_loss": align_summary.get("final_loss"),
                         "seed": plan.seed, "judge": plan.eval_spec.judge})
            write_jsonl(results / "results.jsonl", rows)
    write_json(results / "timing.json", {"wall_s": time.perf_counter() - start})
    return rows


def _evaluate_stage(plan: Plan, eval_spec: EvalSpec, out: Path, adapter: str | None, log) -> dict:
    spec = {"adapter": adapter, "eval": dataclasses.asdict(eval_spec), "model": plan.model}
    if _same_spec(out, spec, "scores.json"):
        return json.loads((out / "scores.json").read_text())
    model, tokenizer = load_aligned(dataclasses.replace(plan.settings[0], aligned_adapter=adapter))
    scores = evaluate(model, tokenizer, eval_spec, out)
    write_json(out / "spec.json", spec)
    log(f"[{out.name}] before attack: {_brief(scores)}")
    return scores


def _attack_and_evaluate(plan: Plan, attack: AttackSpec, out: Path, log) -> dict:
    eval_dir = out / "eval"
    spec = plan.eval_spec_for(attack)
    eval_spec = {"eval": dataclasses.asdict(spec)}
    if _same_spec(out, dataclasses.asdict(attack), "summary.json") and _same_spec(eval_dir, eval_spec, "scores.json"):
        log(f"[{out}] found, reused")
        scores = json.loads((eval_dir / "scores.json").read_text())
    else:
        model, tokenizer, summary = run_attack(attack, out, overwrite=True, log=log)
        # Merged, the adapter costs nothing per generated token (unmerged LoRA made generation 3x slower here).
        scores = evaluate(merge_adapter(model), tokenizer, spec, eval_dir)
        write_json(eval_dir / "spec.json", eval_spec)
        log(f"[{out}] after attack: {_brief(scores)}")
    scores["attack_steps"] = json.loads((out / "summary.json").read_text())["steps"]
    return scores


def _brief(scores: dict) -> str:
    parts = [f"HS {scores['harmful_score']:.1f}%"]
    if scores.get("finetune_accuracy") is not None:
        parts.append(f"FA {scores['finetune_accuracy']:.1f}%")
    if "over_refusal" in scores:
        parts.append(f"over-refusal {scores['over_refusal']:.1f}%")
    return ", ".join(parts)


def load_results(results: str | Path) -> list[dict]:
    path = Path(results) / "results.jsonl"
    if not path.is_file():
        raise UserError(f"{results} holds no results.jsonl: is it a `tvaccine run` results directory?")
    return read_jsonl(path)


