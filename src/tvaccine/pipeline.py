"""``tvaccine run``: the whole comparison from one config.

methods x attack settings -> align (once per method) -> attack -> evaluate -> collect -> report.
Every stage writes its spec next to its outputs; a rerun skips a stage whose outputs exist and
whose spec is unchanged, and redoes it otherwise.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import itertools
import json
import multiprocessing
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from tvaccine.alignment import AlignSpec, run_alignment
from tvaccine.attack import AttackConfig, AttackSpec, attack_mixture, load_aligned, run_attack
from tvaccine.config import (
    DEFAULT_SEED,
    admits_list,
    build_spec,
    coerce,
    coerce_fields,
    field_default,
    option,
    require,
    type_hints,
)
from tvaccine.errors import UserError
from tvaccine.evaluation.evaluate import EvalSpec, evaluate, evaluation_sets, forward_instrument
from tvaccine.evaluation.progress import ProgressSpec, fill_last_point, read_curve, share_keys
from tvaccine.evaluation.robustness import summarize
from tvaccine.methods import METHODS
from tvaccine.models import DEFAULT_MODEL, merge_adapter, resolve_model
from tvaccine.outputs import RESULTS_KIND, OutputLock, check_output_path, check_replaceable, write_marker
from tvaccine.precision import PRECISIONS
from tvaccine.results_io import environment, read_jsonl, write_json, write_jsonl, write_text
from tvaccine.timing import add_phase, breakdown, snapshot, timed

NON_ALIGNED = "none"


@dataclass
class RunConfig:
    """The top level of a run config (a preset, or the YAML file of ``tvaccine run --config``)."""

    name: str = option("run", "The run's name: its results go to results/<name> unless --results says otherwise.")
    model: str = option(DEFAULT_MODEL, "The model every method aligns and every attack fine-tunes.")
    seed: int | list[int] = option(DEFAULT_SEED, "The seed of every stage; a list runs the whole experiment once "
                                   "per seed (into seed-<N>/) and the report gives means and 95% intervals.")
    methods: list[str] = option(factory=lambda: [NON_ALIGNED, "sft", "vaccine", "t-vaccine"],
                                help="Methods to compare, 'none' for the non-aligned model, or variants named in "
                                     "align.method_options.")
    precision: str = option("auto", "Compute precision of every stage: auto (bf16 on a GPU and on a CPU with native "
                            "bf16, fp32 elsewhere), fp32 or bf16.", choices=PRECISIONS)
    evaluate_before_attack: bool = option(False, "Also evaluate each aligned model before the attack.")
    isolate_alignment: bool = option(True, "Align each method in its own process, so its peak memory is its own.")
    align: dict = option(factory=dict, help="AlignSpec fields; method_options maps each method or variant to "
                         "its options (a variant adds `method: <method>` and may add its own `train`).")
    attack: dict = option(factory=dict, help="AttackSpec fields; a list where the field holds one value is a "
                          "sweep (also inside attack.train).")
    evaluate: dict = option(factory=dict, help="EvalSpec fields of the evaluation after each attack.")
    progress: dict | None = option(None, "ProgressSpec fields: score every attack along the way (its HS curve).")

    def __post_init__(self):
        coerce_fields(self)
        require(self.methods, "methods is empty: list at least one method, e.g. [sft]")
        require(len(set(self.methods)) == len(self.methods), "the run config lists a method twice")
        seeds = self.seed if isinstance(self.seed, list) else [self.seed]
        require(seeds, "seed is an empty list: give at least one seed, e.g. [42, 43, 44]")
        require(len(set(seeds)) == len(seeds), f"seed lists a seed twice: {self.seed}")


class Plan:
    """The resolved experiment, every spec built and validated once before any model is loaded.

    ``methods`` replaces the config's list (``tvaccine run --methods``); entries of
    ``align.method_options`` must name a method of the config's own list, so a typo is an error.
    """

    def __init__(self, config: dict, methods: list[str] | None = None, seed: int | None = None):
        run = build_spec(RunConfig, copy.deepcopy(config), "the run config")
        listed = run.methods
        if methods is not None:
            run = dataclasses.replace(run, methods=methods)
        if seed is None:
            require(not isinstance(run.seed, list), "a run config with several seeds makes one plan per seed "
                                                    "(seed_plans)")
            seed = run.seed
        self.config = {**copy.deepcopy(config), "methods": run.methods, "seed": seed}
        self.name, self.model, self.seed, self.methods = run.name, run.model, seed, run.methods
        self.precision = run.precision
        self.evaluate_before_attack = run.evaluate_before_attack
        # One process per alignment makes each method's peak memory its own; a smoke run on a tiny
        # model can skip the process start-up (its memory column is then the run's running peak).
        self.isolate_alignment = run.isolate_alignment
        resolve_model(self.model)  # a wrong model path fails now
        self.base_methods, self.align_specs = self._align_specs(run.align, listed)
        for section, values in (("align", run.align), ("attack", run.attack), ("evaluate", run.evaluate)):
            require("precision" not in values, f"{section}.precision: set precision at the top level of the run "
                                               "config (it is the same for every stage)")
        self.eval_spec = build_spec(EvalSpec, {**run.evaluate, "precision": self.precision}, "evaluate")
        self.progress = build_spec(ProgressSpec, run.progress, "progress") if run.progress is not None else None
        self.settings = self._attack_settings(run.attack)
        for task in dict.fromkeys(spec.task for spec in self.settings):
            evaluation_sets(self.eval_spec_for(task))  # every evaluation source loads
        for spec in self.settings:
            attack_mixture(spec)  # counts, ratios and train/eval overlap are checked now

    def _align_specs(self, align: dict, listed: list[str]) -> tuple[dict, dict]:
        align = dict(align)
        for key in ("method", "model", "seed"):
            require(key not in align, f"align.{key}: set {'methods' if key == 'method' else key} at the top level "
                                      "of the run config")
        options = align.pop("method_options", {})
        require(isinstance(options, dict), f"align.method_options: expected a mapping of method -> options, got "
                                           f"{options!r}")
        shared_train = align.pop("train", {})
        require(isinstance(shared_train, dict), f"align.train: expected a mapping of TrainingArguments fields, got "
                                                f"{shared_train!r}")
        base_methods = {label: self._base_method(label, options.get(label)) for label in self.methods}
        for label, entry in options.items():
            require(label in listed or label in self.methods,
                    f"align.method_options.{label}: {label!r} is not among the methods ({', '.join(listed)})")
            require(isinstance(entry, dict), f"align.method_options.{label}: expected a mapping of {label}'s "
                                             f"options, got {entry!r}")
        specs = {}
        # Every entry is built, so a bad value of a method left out by --methods is an error too.
        for label in dict.fromkeys([*self.methods, *options]):
            entry = dict(options.get(label, {}))
            base = base_methods.get(label) or self._base_method(label, entry)
            if base == NON_ALIGNED:
                require(not entry, f"align.method_options.{label}: the non-aligned model has no options")
                continue
            entry.pop("method", None)
            train = entry.pop("train", {})
            require(isinstance(train, dict), f"align.method_options.{label}.train: expected a mapping, got {train!r}")
            spec = build_spec(AlignSpec, {**align, "method": base, "model": self.model, "seed": self.seed,
                                          "precision": self.precision,
                                          "train": {**shared_train, **train}, "method_options": entry},
                              f"align ({label})")
            if label in self.methods:
                specs[label] = spec
        return base_methods, specs

    @staticmethod
    def _base_method(label: str, entry) -> str:
        """The method a label runs: itself, or for a variant (``tv-s15: {method: t-vaccine, ...}``) its ``method``."""
        named = entry.get("method") if isinstance(entry, dict) else None
        if label in METHODS and named not in (None, label):
            raise UserError(f"align.method_options.{label}.method: {label!r} is a method itself; name the "
                            "variant differently")
        base = label if label in METHODS or label == NON_ALIGNED else named
        if base not in METHODS and not (label == NON_ALIGNED and base == NON_ALIGNED):
            raise UserError(f"unknown method {label!r} in the run config; choose from "
                            f"{', '.join([NON_ALIGNED, *METHODS])}, or define it as a variant in "
                            "align.method_options with a `method:` key")
        return base

    def _attack_settings(self, attack: dict) -> list[AttackSpec]:
        """One AttackSpec per point of the sweep: a list in a field that holds one value (``p: [0.1, 0.5]``,
        also inside ``train``) is swept over."""
        attack = copy.deepcopy(attack)
        for key, where in (("eval_harmful", "evaluate.eval_harmful"), ("eval_every", "progress.every"),
                           ("progress_eval", "the top-level progress section"), ("model", "model at the top level"),
                           ("seed", "seed at the top level")):
            require(key not in attack, f"attack.{key}: set {where} instead (it is the same for every attack)")
        train = attack.get("train", {})
        require(isinstance(train, dict), f"attack.train: expected a mapping of TrainingArguments fields, got {train!r}")
        hints, train_hints = type_hints(AttackSpec), type_hints(AttackConfig)
        axes = [((key,), value) for key, value in attack.items()
                if key in hints and isinstance(value, list) and not admits_list(hints[key])]
        axes += [(("train", key), value) for key, value in train.items()
                 if key in train_hints and isinstance(value, list) and not admits_list(train_hints[key])]
        for path, values in axes:
            require(values, f"attack.{'.'.join(path)}: an empty list sweeps over nothing; give one value or several")
            require(len({json.dumps(v, default=str) for v in values}) == len(values),
                    f"attack.{'.'.join(path)} lists a value twice: {values} (a sweep runs each value once)")
        settings = []
        for point in itertools.product(*(values for _, values in axes)):
            setting = copy.deepcopy(attack)
            for (*parents, key), value in zip((path for path, _ in axes), point):
                target = setting
                for parent in parents:
                    target = target[parent]
                target[key] = value
            task = coerce(setting.get("task", field_default(AttackSpec, "task")), str, "attack.task")
            progress = {}
            if self.progress:
                progress = {"eval_every": self.progress.every, "progress_generate": self.progress.generate,
                            "progress_eval": self.progress.eval_spec(self.eval_spec_for(task))}
            settings.append(build_spec(AttackSpec, {**setting, "model": self.model, "seed": self.seed,
                                                    "precision": self.precision,
                                                    "eval_harmful": self.eval_spec.eval_harmful, **progress},
                                       "attack"))
        return settings

    def eval_spec_for(self, task: str) -> EvalSpec:
        """Fine-tune accuracy is measured on the task the attack fine-tuned on, unless the config
        names an evaluation task."""
        return self.eval_spec if self.eval_spec.task else dataclasses.replace(self.eval_spec, task=task)

    @staticmethod
    def setting_name(spec: AttackSpec) -> str:
        task = spec.task.split(":")[-1].split("@")[0].split("/")[-1]
        steps = spec.args.max_steps if spec.args.max_steps > 0 else f"{spec.args.num_train_epochs:g}ep"
        return f"{task}_p{spec.p:g}_n{spec.n}_lr{spec.args.learning_rate:g}_steps{steps}"


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
    over everything this run did before. A configuration the child refuses comes back as its message."""
    context = multiprocessing.get_context("spawn")
    import torch

    refusal, report = context.Pipe(duplex=False)
    process = context.Process(target=_align_child, args=(spec, str(out), torch.get_num_threads(), report))
    process.start()
    report.close()
    process.join()
    if process.exitcode == 2:
        raise UserError(refusal.recv() if refusal.poll() else f"alignment with {spec.method} refused its configuration")
    if process.exitcode == 130:
        raise KeyboardInterrupt
    if process.exitcode != 0:
        raise RuntimeError(f"alignment with {spec.method} failed (exit code {process.exitcode}); see the log above")


def _align_child(spec: AlignSpec, out: str, threads: int, report) -> None:
    import sys

    import torch

    torch.set_num_threads(threads)  # the parent's choice, not the library default
    try:
        run_alignment(spec, out, overwrite=True)
    except UserError as exc:
        report.send(str(exc))
        sys.exit(2)
    except KeyboardInterrupt:  # the parent got the same Ctrl-C and says what was kept
        sys.exit(130)


def seed_plans(config: dict, methods: list[str] | None = None) -> list[Plan]:
    """One validated Plan per seed of the config's ``seed`` (a number or a list), all built before any
    model loads."""
    seed = build_spec(RunConfig, copy.deepcopy(config), "the run config").seed
    return [Plan(config, methods, seed=s) for s in (seed if isinstance(seed, list) else [seed])]


def run_seeds(plans: list[Plan], results: str | Path, log=print, overwrite: bool = False) -> list[dict]:
    """One seed runs into ``results`` itself; several run into ``results/seed-<N>`` each, and the top
    level collects every seed's rows in one results.jsonl for the report's means and intervals.
    ``overwrite`` replaces a results folder instead of reusing its stages."""
    results = Path(results)
    if len(plans) == 1:
        if not overwrite and any(results.glob("seed-*/results.jsonl")):
            raise UserError(f"{results} holds a several-seed run; give a single-seed run its own --results folder")
        return run_experiment(plans[0], results, log, overwrite)
    if not overwrite and ((results / "align").is_dir() or (results / "attack").is_dir()):
        raise UserError(f"{results} holds a single-seed run; give a several-seed run its own --results folder")
    rows = []
    with _results_folder(results, overwrite) as previous:
        config = {**plans[0].config, "seed": [plan.seed for plan in plans]}
        _write_config(results, config, _merged_rows(results, previous, [], by_seed=True), by_seed=True)
        write_json(results / "environment.json", environment())
        start, since = time.perf_counter(), snapshot()
        for plan in plans:
            log(f"=== seed {plan.seed} ===")
            rows += run_experiment(plan, results / f"seed-{plan.seed}", log)
            merged = _merged_rows(results, previous, rows, by_seed=True)
            write_jsonl(results / "results.jsonl", merged)
        _write_config(results, config, merged, by_seed=True)
        write_json(results / "timing.json", breakdown(time.perf_counter() - start, since))
    return rows


@contextlib.contextmanager
def _results_folder(results: Path, overwrite: bool = False):
    """Hold the results folder's lock and yield the rows already in it. The folder must be new, empty
    or a tvaccine results folder (replaced with ``overwrite``, else reused): nothing else is written
    into or deleted. A folder this run created is removed again if it fails before any stage finished."""
    check_output_path(results, "results folder")
    replace = check_replaceable(results, overwrite, "results folder", "--results", RESULTS_KIND, reuse=True)
    created = replace or not results.exists()
    with OutputLock(results) as lock:
        try:
            if replace:
                shutil.rmtree(results)
            previous = read_jsonl(results / "results.jsonl") if (results / "results.jsonl").is_file() else []
            results.mkdir(parents=True, exist_ok=True)
            write_marker(results, RESULTS_KIND)
            yield previous
        except BaseException:
            if created and not any(results.rglob("summary.json")) and not any(results.rglob("scores.json")):
                shutil.rmtree(results, ignore_errors=True)
                lock.release()
                lock.remove_made_folders()
            raise


def run_experiment(plan: Plan, results: str | Path, log=print, overwrite: bool = False) -> list[dict]:
    """Every stage of ``plan`` into ``results``, reusing the stages already there (``overwrite``: none).
    A second run into the same folder is refused; a folder this run created is removed again if nothing
    in it finished. Returns this run's rows; results.jsonl also keeps the earlier rows it did not redo."""
    results = Path(results)
    with _results_folder(results, overwrite) as previous:
        return _run_stages(plan, results, log, previous)


def _merged_rows(results: Path, previous: list[dict], new: list[dict], by_seed: bool = False) -> list[dict]:
    """This run's rows in place of the earlier rows they redo (same method and setting, and seed with
    ``by_seed``). An earlier row that this run did not redo is kept while the attack it was measured on
    is still in the folder: a redone alignment deletes the attacks on the old one, and so their rows."""
    def key(row: dict) -> tuple:
        return row.get("seed") if by_seed else None, row.get("method"), row.get("setting")

    def measured(row: dict) -> bool:
        if not isinstance(row.get("method"), str) or not isinstance(row.get("setting"), str):
            return False
        folder = results / f"seed-{row.get('seed')}" if by_seed else results
        return (folder / "attack" / row["method"] / row["setting"] / "eval" / "scores.json").is_file()

    fresh = {key(row): row for row in new}
    merged, placed = [], set()
    for row in previous:
        if key(row) in fresh:
            if key(row) not in placed:
                merged.append(fresh[key(row)])
                placed.add(key(row))
        elif measured(row):
            merged.append(row)
    return merged + [row for row in new if key(row) not in placed]


def _write_config(results: Path, config: dict, rows: list[dict], by_seed: bool = False) -> None:
    """run_config.yaml: this run's config, its methods (and seeds) widened to those of every row kept."""
    config = {**config, "methods": list(dict.fromkeys([*(r["method"] for r in rows), *config["methods"]]))}
    if by_seed:
        config["seed"] = list(dict.fromkeys([*(r.get("seed") for r in rows), *config["seed"]]))
    write_text(results / "run_config.yaml", yaml.safe_dump(config, sort_keys=False))


def _run_stages(plan: Plan, results: Path, log, previous: list[dict]) -> list[dict]:
    _write_config(results, plan.config, _merged_rows(results, previous, []))
    write_json(results / "environment.json", environment())
    start, since = time.perf_counter(), snapshot()
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
                with timed(f"align {method}"):
                    if plan.isolate_alignment:
                        _align_in_subprocess(spec, align_dir)
                        for phase, cost in json.loads((align_dir / "summary.json").read_text()).get(
                                "phases", {}).items():  # the child's own breakdown
                            add_phase(phase, cost["s"])
                    else:
                        run_alignment(spec, align_dir, overwrite=True, log=log)
            adapter = str(align_dir / "adapter")
            align_summary = json.loads((align_dir / "summary.json").read_text())
        before = {}
        if plan.evaluate_before_attack:
            before = _evaluate_stage(plan, plan.eval_spec_for(plan.settings[0].task),
                                     results / "before_attack" / method, adapter, log)
        for attack in plan.settings:
            attack = dataclasses.replace(attack, aligned_adapter=adapter)
            attack_dir = results / "attack" / method / Plan.setting_name(attack)
            scores = _attack_and_evaluate(plan, attack, attack_dir, log)
            curve = read_curve(attack_dir)
            rows.append({"method": method, "base_method": plan.base_methods[method], "precision": attack.precision_used,
                         "setting": Plan.setting_name(attack), "p": attack.p, "n": attack.n,
                         "attack_lr": attack.args.learning_rate, "attack_steps": scores.pop("attack_steps", None),
                         "curve": curve, **summarize(curve),
                         **{f"after_{k}": v for k, v in scores.items()},
                         **{f"after_{k}": v for k, v in share_keys(scores).items()},
                         **{f"before_{k}": v for k, v in before.items()},
                         **{f"before_{k}": v for k, v in share_keys(before).items()},
                         "align_peak_memory_bytes": align_summary.get("peak_memory_bytes"),
                         "align_memory_kind": align_summary.get("memory_kind"),
                         "align_mean_step_s": align_summary.get("mean_step_s"),
                         "align_final_loss": align_summary.get("final_loss"),
                         "seed": plan.seed, "judge": plan.eval_spec.judge})
            write_jsonl(results / "results.jsonl", _merged_rows(results, previous, rows))
    _write_config(results, plan.config, _merged_rows(results, previous, rows))
    write_json(results / "timing.json", breakdown(time.perf_counter() - start, since))
    return rows


def _evaluate_stage(plan: Plan, eval_spec: EvalSpec, out: Path, adapter: str | None, log) -> dict:
    spec = {"adapter": adapter, "eval": dataclasses.asdict(eval_spec), "model": plan.model}
    if _same_spec(out, spec, "scores.json"):
        return json.loads((out / "scores.json").read_text())
    with timed(f"evaluation before the attack {out.name}"):
        model, tokenizer = load_aligned(dataclasses.replace(plan.settings[0], aligned_adapter=adapter))
        scores = evaluate(model, tokenizer, eval_spec, out, forward_instrument(eval_spec, tokenizer))
    write_json(out / "spec.json", spec)
    log(f"[{out.name}] before attack: {_brief(scores)}")
    return scores


def _attack_and_evaluate(plan: Plan, attack: AttackSpec, out: Path, log) -> dict:
    eval_dir = out / "eval"
    spec = plan.eval_spec_for(attack.task)
    eval_spec = {"eval": dataclasses.asdict(spec)}
    if _same_spec(out, dataclasses.asdict(attack), "summary.json") and _same_spec(eval_dir, eval_spec, "scores.json"):
        log(f"[{out}] found, reused")
        scores = json.loads((eval_dir / "scores.json").read_text())
    else:
        label = out.parent.name
        with timed(f"attack {label}"):
            model, tokenizer, summary = run_attack(attack, out, overwrite=True, log=log, generate_last=False)
        with timed(f"final evaluation {label}"):
            # Merged, the adapter costs nothing per generated token (unmerged LoRA made generation 3x slower here).
            scores = evaluate(merge_adapter(model), tokenizer, spec, eval_dir)
            if attack.progress_eval is not None:  # the curve's last point: this model, the first n prompts
                fill_last_point(out / "progress", eval_dir, attack.progress_eval)
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


def run_and_report(plans: list[Plan], results: str | Path, log=print, overwrite: bool = False) -> str:
    """``run_seeds`` then the report; ``timing.json`` accounts for the whole wall time, the report's included
    (the report itself shows the breakdown up to the report)."""
    from tvaccine.report import write_report

    results = Path(results)
    start, since = time.perf_counter(), snapshot()
    run_seeds(plans, results, log, overwrite)
    write_json(results / "timing.json", breakdown(time.perf_counter() - start, since))
    with timed("report"):
        text = write_report(results, load_results(results))
    write_json(results / "timing.json", breakdown(time.perf_counter() - start, since))
    return text


def load_results(results: str | Path) -> list[dict]:
    path = Path(results) / "results.jsonl"
    if not path.is_file():
        raise UserError(f"{results} holds no results.jsonl: is it a `tvaccine run` results directory?")
    return [_with_shares(Path(results), row) for row in read_jsonl(path)]


def _with_shares(results: Path, row: dict) -> dict:
    """A row written before the answer shares were collected gets them from its saved scores (the
    curve points' and the final evaluation's), so an older results folder reports them too."""
    if not isinstance(row.get("method"), str) or not isinstance(row.get("setting"), str):
        return row
    seed_dir = results / f"seed-{row.get('seed')}"
    attack_dir = (seed_dir if seed_dir.is_dir() else results) / "attack" / row["method"] / row["setting"]
    if row.get("curve") and "complied_share" not in row["curve"][0] and attack_dir.is_dir():
        row = {**row, "curve": read_curve(attack_dir)}
    scores = attack_dir / "eval" / "scores.json"
    if "after_complied_share" not in row and scores.is_file():
        row = {**row, **{f"after_{k}": v for k, v in share_keys(json.loads(scores.read_text())).items()}}
    return row


