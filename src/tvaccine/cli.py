"""The ``tvaccine`` command. Sub-commands only parse, validate and call into the package.

The options of ``align``, ``attack`` and ``evaluate`` are generated from the spec dataclasses and the
TrainingArguments subclasses, the way TRL builds its parsers: each default and help text exists once,
in its field. Only the chosen sub-command's options are built, and the heavy modules are imported
only then, so ``tvaccine --help`` answers at once.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

from tvaccine.errors import Interrupted, UserError

DESCRIPTION = ("Alignment-stage defenses against harmful fine-tuning: align a model with one of the methods "
               "sft, vaccine, t-vaccine, repnoise or tar, attack it by fine-tuning on partly harmful data, and "
               "measure its harmful score, fine-tune accuracy and over-refusal.")
_UNSET = object()  # a TrainingArguments default that means "not used" (max_steps, save_steps)

# Options that were renamed, per sub-command: the old name gets a one-line error naming the new one.
RENAMED_FLAGS = {
    "align": {"--lr": "--learning-rate", "--epochs": "--num-train-epochs",
              "--batch-size": "--per-device-train-batch-size", "--grad-accum": "--gradient-accumulation-steps",
              "--data": "--safety-data", "--benign": "--benign-data", "--harmful": "--probe-data",
              "--tau": "--perturbation-interval", "--cpu": "--use-cpu"},
    "attack": {"--lr": "--learning-rate", "--epochs": "--num-train-epochs",
               "--batch-size": "--per-device-train-batch-size", "--harmful": "--harmful-data", "--cpu": "--use-cpu",
               "--eval-every": "--progress-every", "--eval-n-harmful": "--progress-n-harmful",
               "--eval-n-task": "--progress-n-task", "--eval-n-borderline": "--progress-n-borderline",
               "--eval-max-new-tokens": "--max-new-tokens-harmful",
               "--eval-max-new-tokens-task": "--max-new-tokens-task"},
    "evaluate": {"--harmful": "--eval-harmful"},
    "layers": {"--harmful": "--probe-data"},
}

# TrainingArguments fields with an option of their own in `align` and `attack` (any other is --set
# KEY=VALUE), with a help text where the field's own does not fit this package's use of it.
TRAIN_OPTIONS = {
    "learning_rate": None, "num_train_epochs": None, "per_device_train_batch_size": None,
    "max_steps": "Stop after this many optimizer steps (>= 1; unset: num_train_epochs decides).",
    "gradient_accumulation_steps": "Micro-batches per optimizer step.",
    "lr_scheduler_type": None, "warmup_steps": None, "weight_decay": None,
    "save_steps": "Checkpoint every this many steps, so that --resume can continue an interrupted run "
                  "(unset: no checkpoints).",
    "use_cpu": "Train on the CPU even if a GPU is present.",
}


class _Parser(argparse.ArgumentParser):
    """Usage errors on one line, like every other error of this command."""

    def error(self, message):
        self.exit(2, f"tvaccine: error: {message} (see {self.prog} --help)\n")


class _Renamed(argparse.Action):
    def __init__(self, option_strings, dest, new: str, **kwargs):
        super().__init__(option_strings, dest, nargs="?", help=argparse.SUPPRESS, **kwargs)
        self.new = new

    def __call__(self, parser, namespace, values, option_string=None):
        parser.error(f"{option_string} was renamed {self.new}")


# ------------------------------------------------------------------------------------------- options

def _shown(value) -> str:
    if value is _UNSET:
        return "unset"
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value)) or "none"
    return str(value) or "''"


def _parse_as(hint):
    """An argparse ``type``: the text coerced by the field's type, as a YAML value would be."""
    from tvaccine.config import coerce

    def parse(text: str):
        try:
            return coerce(text, hint, "", text=True)
        except UserError as exc:
            raise argparse.ArgumentTypeError(str(exc).removeprefix(": ")) from None

    return parse


def _add_option(parser, flag: str, dest: str, hint, help: str, shown: str, metadata=None) -> None:
    """One option for one dataclass field, with its help, its shown default and its type. Unless given,
    the option leaves ``args`` alone, so the field's own default applies."""
    import typing

    from tvaccine.config import admits_list

    metadata = metadata or {}
    # argparse formats help with %: a literal one in a field's help must not end --help in a traceback.
    kwargs = {"dest": dest, "default": argparse.SUPPRESS, "help": f"{help} (default: {shown})".replace("%", "%%")}
    members = [m for m in typing.get_args(hint) if m is not type(None)] or [hint]
    if members == [bool]:
        parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
        return
    if admits_list(hint):
        item = next((typing.get_args(m)[0] for m in members if typing.get_args(m)), str)
        kwargs.update(nargs="+", type=_parse_as(item))
    else:
        kwargs["type"] = _parse_as(hint)
    if metadata.get("choices"):
        kwargs["choices"] = metadata["choices"]
    else:
        kwargs["metavar"] = metadata.get("metavar") or {int: "INT", float: "FLOAT"}.get(members[0], "TEXT")
    parser.add_argument(flag, **kwargs)


def _add_fields(parser, cls, kind: str, skip=(), only=None, prefix: str = "") -> None:
    """An option per field of the dataclass ``cls``; parsed values land in ``args`` as ``<kind>:<field>``."""
    from tvaccine.config import field_default, init_fields, type_hints

    hints = type_hints(cls)
    for field in init_fields(cls):
        if field.name in skip or (only is not None and field.name not in only):
            continue
        flag = "--" + field.metadata.get("flag", prefix + field.name).replace("_", "-")
        _add_option(parser, flag, f"{kind}:{field.name}", hints[field.name], field.metadata.get("help", ""),
                    _shown(field_default(cls, field.name)), field.metadata)


def _add_training_options(parser, config_class) -> None:
    from tvaccine.config import field_default, type_hints

    group = parser.add_argument_group("training (TrainingArguments; any other field: --set KEY=VALUE)")
    hints = type_hints(config_class)
    fields = {f.name: f for f in dataclasses.fields(config_class)}
    for name, help in TRAIN_OPTIONS.items():
        default = _UNSET if name in ("max_steps", "save_steps") else field_default(config_class, name)
        text = help or fields[name].metadata.get("help", "").split(". ")[0].rstrip(".") + "."
        _add_option(group, _flag(name), f"train:{name}", hints[name], text, _shown(default))


def _add_method_options(parser) -> None:
    """The methods' own knobs (from their config dataclasses), each marked with the methods it applies to."""
    from tvaccine.config import field_default, method_option_names, type_hints
    from tvaccine.methods import METHODS

    group = parser.add_argument_group("method options (each applies to the methods in brackets)")
    owners: dict[str, list[str]] = {}
    for method, (config_class, _) in METHODS.items():
        for name in method_option_names(config_class):
            owners.setdefault(name, []).append(method)
    for name, methods in owners.items():
        config_class = METHODS[methods[0]][0]
        field = next(f for f in dataclasses.fields(config_class) if f.name == name)
        defaults = {m: _shown(field_default(METHODS[m][0], name)) for m in methods}
        shown = next(iter(defaults.values())) if len(set(defaults.values())) == 1 else \
            ", ".join(f"{m} {d}" for m, d in defaults.items())
        _add_option(group, _flag(name), f"knob:{name}", type_hints(config_class)[name],
                    f"[{', '.join(methods)}] {field.metadata.get('help', '')}", shown, field.metadata)


def _add_model_options(parser) -> None:
    from tvaccine.config import DTYPES
    from tvaccine.models import DEFAULT_MODEL

    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help=f"Hub id, local directory or .gguf file (default: {DEFAULT_MODEL}, runs offline)")
    parser.add_argument("--dtype", choices=DTYPES, help="Weights' dtype (default: fp32 on CPU, bf16 on GPU)")
    parser.add_argument("--trust-remote-code", action="store_true", help="Allow custom modeling code from the hub")
    parser.add_argument("--allow-pickle", action="store_true", help="Allow pickled .bin weights (can run code)")


def _add_output_options(parser, what: str, resume: bool = False, default: str | None = None) -> None:
    parser.add_argument("--out", required=default is None, default=default,
                        help=f"Output folder ({what})" + (f" (default: {default})" if default else ""))
    parser.add_argument("--overwrite", action="store_true",
                        help="Replace an output folder that tvaccine wrote (one that holds its .tvaccine marker); "
                             "any other non-empty folder is refused, never deleted")
    if resume:
        parser.add_argument("--resume", action="store_true",
                            help="Continue an interrupted run from its last checkpoint (see --save-steps)")


def _add_set_option(parser, what: str, example: str) -> None:
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", default=[],
                        help=f"Any other field of {what}, coerced by its type, e.g. {example} "
                             "(repeatable; default: none)")


def _positive_int(limit: int | None = None):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < 1 or (limit is not None and value > limit):
            raise argparse.ArgumentTypeError(f"expected an integer in [1, {limit}], got {value}" if limit else
                                             f"expected an integer >= 1, got {value}")
        return value

    return parse


def _given(args, kind: str) -> dict:
    prefix = f"{kind}:"
    return {key[len(prefix):]: value for key, value in vars(args).items() if key.startswith(prefix)}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _route_assignments(assignments: list[str], config_class, label: str, train: dict, options: dict | None) -> None:
    """``--set KEY=VALUE``: a method option (into ``options``) or a TrainingArguments field (into ``train``)."""
    from transformers import TrainingArguments

    from tvaccine.config import RENAMED, coerce, init_fields, method_option_names, parse_assignments, type_hints

    own = method_option_names(config_class) if options is not None else []
    base = [f.name for f in init_fields(TrainingArguments)]
    hints = type_hints(config_class)
    for key, text in parse_assignments(assignments).items():
        renamed = RENAMED["train"].get(key) or RENAMED["method_options"].get(key)
        if renamed:
            raise UserError(f"--set {key} was renamed: use --set {renamed}=...")
        if key not in own and key not in base:
            import difflib

            close = difflib.get_close_matches(key, [*own, *base], n=1)
            raise UserError(f"--set {key}: not a training argument or an option of {label}"
                            + (f"; did you mean {close[0]}?" if close else ""))
        target = options if key in own else train
        if key in target:
            raise UserError(f"{key} is given twice: as {_flag(key)} and with --set")
        target[key] = coerce(text, hints[key], f"--set {key}", text=True)


def _load_merged(args, *adapters: str | None):
    """The model with each given adapter merged in, in order (the alignment's, then the attack's)."""
    from tvaccine.models import load_adapter, load_model, merge_adapter

    model, tokenizer = load_model(args.model, dtype=args.dtype, trust_remote_code=args.trust_remote_code,
                                  allow_pickle=args.allow_pickle)
    for adapter in adapters:
        if adapter:
            model = merge_adapter(load_adapter(model, adapter))
    return model, tokenizer


def _warn(message: str) -> None:
    print(f"tvaccine: warning: {message}", file=sys.stderr)


def _warn_eval_counts(spec, given: set) -> None:
    """Load the evaluation sets (so a bad source fails now) and say when a count the user set asks for more
    prompts than a set holds: those are all scored. The defaults (the papers' 500) stay quiet."""
    from tvaccine.evaluation.evaluate import evaluation_sets

    sets = evaluation_sets(spec)
    for name, field, source in (("harmful", "n_harmful", spec.eval_harmful), ("task", "n_task", spec.task),
                                ("borderline", "n_borderline", spec.borderline)):
        if field in given and name in sets and len(sets[name][0]) < getattr(spec, field):
            held = len(sets[name][0])
            _warn(f"{field} is {getattr(spec, field)}, but {source} holds {held} {name} prompts: scoring all {held}")


def _warn_align_counts(spec, given: set) -> None:
    """Say when a set n_safety asks for more refusal samples than the source holds (all are used)."""
    from tvaccine.data.sources import load_source, pick_split

    if "n_safety" in given and spec.n_safety is not None:
        held = len(pick_split(load_source(spec.safety_data), "align", "train"))
        if spec.n_safety > held:
            _warn(f"n_safety is {spec.n_safety}, but {spec.safety_data} holds {held} refusal samples: aligning on "
                  f"all {held}")


def _warn_run_counts(config: dict, plan) -> None:
    """The same warnings for a run config: the counts its align and evaluate sections set."""
    align, evaluate = config.get("align") or {}, config.get("evaluate") or {}
    if plan.align_specs and isinstance(align, dict):
        _warn_align_counts(next(iter(plan.align_specs.values())), set(align))
    if isinstance(evaluate, dict) and {"n_harmful", "n_task", "n_borderline"} & set(evaluate):
        for task in dict.fromkeys(spec.task for spec in plan.settings):
            _warn_eval_counts(plan.eval_spec_for(task), set(evaluate))


def _check_model_inputs(args, *adapters: str | None) -> None:
    """What can be checked of the model and adapters without loading them, before anything is written."""
    from tvaccine.models import check_adapter, check_hub_model

    check_hub_model(args.model, args.allow_pickle)
    for adapter in adapters:
        if adapter:
            check_adapter(adapter)


# ------------------------------------------------------------------------------------------- generate

def _generate_options(p) -> None:
    from tvaccine.config import DEFAULT_TEMPLATE
    from tvaccine.data.formatting import TEMPLATES
    from tvaccine.evaluation.evaluate import MAX_NEW_TOKENS

    p.add_argument("prompt", nargs="*", help="Prompt(s) to answer")
    p.add_argument("--prompts-file", help="A UTF-8 text file with one prompt per line (default: none)")
    p.add_argument("--adapter", help="A LoRA adapter folder to apply (default: none)")
    p.add_argument("--template", choices=TEMPLATES, default=DEFAULT_TEMPLATE,
                   help=f"Prompt template (default: {DEFAULT_TEMPLATE})")
    p.add_argument("--max-new-tokens", type=_positive_int(MAX_NEW_TOKENS), default=128, metavar="INT",
                   help=f"Tokens per answer, at most {MAX_NEW_TOKENS} (default: 128)")
    p.add_argument("--batch-size", type=_positive_int(), default=8, metavar="INT",
                   help="Prompts answered at once (default: 8)")
    _add_model_options(p)


def cmd_generate(args) -> None:
    from tvaccine.evaluation.generation import context_length, generate

    prompts = list(args.prompt)
    if args.prompts_file:
        path = Path(args.prompts_file)
        if not path.exists():
            raise UserError(f"prompts file not found: {path}")
        if not path.is_file():
            raise UserError(f"prompts file {path} is not a regular file (a folder, pipe or device)")
        try:  # utf-8-sig: a byte-order mark some editors write is not part of the first prompt
            lines = path.read_text(encoding="utf-8-sig").splitlines()
        except UnicodeDecodeError as exc:
            raise UserError(f"prompts file {path} is not UTF-8 text (byte {exc.start})") from None
        from_file = [line.strip() for line in lines if line.strip()]
        if not from_file:
            raise UserError(f"prompts file {path} holds no prompt (every line is empty)")
        prompts += from_file
    if not prompts:
        raise UserError("no prompt given: pass one as an argument or use --prompts-file")
    _check_model_inputs(args, args.adapter)
    start = time.perf_counter()
    model, tokenizer = _load_merged(args, args.adapter)
    print(f"[model loaded in {time.perf_counter() - start:.1f} s]", file=sys.stderr)
    answers = generate(model, tokenizer, [{"instruction": p} for p in prompts], args.template, args.max_new_tokens,
                       args.batch_size, progress=None if len(prompts) == 1 else "generating")
    cut = sum(a.prompt_truncated for a in answers)
    if cut:
        print(f"[{cut} of {len(prompts)} prompts cut to fit the model's context of "
              f"{context_length(model, tokenizer)} tokens with {args.max_new_tokens} new ones]", file=sys.stderr)
    for prompt, answer in zip(prompts, answers):
        heading = prompt if len(prompt) <= 200 else prompt[:200] + "..."  # a 10 MB prompt is not echoed whole
        print(answer.text if len(prompts) == 1 else f"### {heading}\n{answer.text}\n")


# ------------------------------------------------------------------------------------------- data

def _data_options(p) -> None:
    p.add_argument("action", choices=["list", "show", "fetch"],
                   help="list the sources; show one; fetch hub datasets into the data mirror")
    p.add_argument("source", nargs="*", help="show: a source spec name[:path][@split]; fetch: dataset names "
                                             "(beavertails, sst2, agnews, gsm8k, alpacaeval, advbench, hhrlhf)")
    p.add_argument("--n", type=_positive_int(), default=2, metavar="INT", help="Examples to print (default: 2)")
    p.add_argument("--to", metavar="DIR", help="fetch: the mirror folder (default: $TVACCINE_DATA); afterwards "
                                               "set TVACCINE_DATA to it so every source named without a path "
                                               "reads it")


def cmd_data(args) -> None:
    from tvaccine.data.formatting import format_prompt
    from tvaccine.data.mirror import MIRROR_ENV, fetch, mirror_root
    from tvaccine.data.sources import available_sources, load_source

    if args.action == "fetch":
        root = Path(args.to).expanduser() if args.to else mirror_root()
        if root is None:
            raise UserError(f"data fetch needs a mirror folder: --to DIR or {MIRROR_ENV}=DIR")
        if not args.source:
            raise UserError("data fetch needs dataset names, e.g. tvaccine data fetch beavertails sst2")
        for name in args.source:
            fetch(name, root)
        if args.to and mirror_root() != root:
            print(f"now set {MIRROR_ENV}={root} to read it")
        return
    if args.action == "list" or not args.source:
        for name, help in available_sources().items():
            print(f"{name:14s} {help}")
        return
    if len(args.source) > 1:
        raise UserError(f"data show takes one source, got {len(args.source)}")
    args.source = args.source[0]
    source = load_source(args.source)
    print(f"{source.name}: {source.description}".rstrip(": "))
    for split, records in source.splits.items():
        print(f"  split {split}: {len(records)} records")
        categories = {}
        for record in records:
            if record.get("category"):
                categories[record["category"]] = categories.get(record["category"], 0) + 1
        for category, count in sorted(categories.items()):
            print(f"    {category}: {count}")
    first_split = next(iter(source.splits.values()))
    for record in first_split[:args.n]:
        print("-" * 60)
        print(format_prompt(record, template="alpaca") + (record.get("output") or ""))


# ------------------------------------------------------------------------------------------- align

def _align_options(p) -> None:
    from tvaccine.alignment import AlignSpec
    from tvaccine.methods.base import AlignmentConfig

    _add_output_options(p, "adapter, logs, costs", resume=True)
    _add_fields(p.add_argument_group("alignment"), AlignSpec, "spec", skip=("train", "method_options"))
    _add_training_options(p, AlignmentConfig)
    _add_method_options(p)
    _add_set_option(p, "the method's config (a training argument or a method option)",
                    "--set adam_beta2=0.95 --set exclude_layers=0,1")


def cmd_align(args) -> None:
    from tvaccine.alignment import AlignSpec, run_alignment
    from tvaccine.config import field_default, method_option_names
    from tvaccine.methods import METHODS

    spec = _given(args, "spec")
    method = spec.get("method", field_default(AlignSpec, "method"))
    config_class = METHODS[method][0]
    train, options = _given(args, "train"), _given(args, "knob")
    foreign = [name for name in options if name not in method_option_names(config_class)]
    if foreign:
        raise UserError(f"{_flag(foreign[0])} does not apply to --method {method}")
    _route_assignments(args.set, config_class, method, train, options)
    align_spec = AlignSpec(**spec, train=train, method_options=options)
    _warn_align_counts(align_spec, set(spec))
    summary = run_alignment(align_spec, args.out, overwrite=args.overwrite, resume=args.resume)
    print(json.dumps(summary, indent=2))


# ------------------------------------------------------------------------------------------- layers

def _layers_options(p) -> None:
    from tvaccine.config import DEFAULT_TEMPLATE
    from tvaccine.data.formatting import TEMPLATES

    _add_output_options(p, "layer_norms.json and layer_norms.png", default="runs/layers")
    p.add_argument("--probe-data", default="beavertails", metavar="SOURCE",
                   help="Harmful prompts with harmful answers to probe with (default: beavertails)")
    p.add_argument("--adapter", help="Probe an aligned model: its LoRA adapter folder (default: none)")
    p.add_argument("--samples", type=_positive_int(), metavar="INT",
                   help="Harmful samples in the probe (default: 64)")
    p.add_argument("--batch-size", type=_positive_int(), default=8, metavar="INT",
                   help="Samples per backward pass (default: 8)")
    p.add_argument("--template", choices=TEMPLATES, default=DEFAULT_TEMPLATE,
                   help=f"Prompt template (default: {DEFAULT_TEMPLATE})")
    p.add_argument("--max-length", type=_positive_int(), default=200, metavar="INT",
                   help="Tokens per sample (default: 200)")
    _add_model_options(p)


def cmd_layers(args) -> None:
    from tvaccine.data.sources import load_source, pick_split
    from tvaccine.layer_report import probe_layers
    from tvaccine.outputs import OutputDir

    records = pick_split(load_source(args.probe_data), "harmful", "train")  # checked before the model loads
    if args.samples is not None and args.samples > len(records):
        _warn(f"--samples {args.samples}: {args.probe_data} holds {len(records)} harmful samples; probing with all "
              f"{len(records)}")
    _check_model_inputs(args, args.adapter)
    with OutputDir(args.out, overwrite=args.overwrite) as work:
        model, tokenizer = _load_merged(args, args.adapter)
        result = probe_layers(model, tokenizer, records, args.probe_data, args.samples or 64, args.batch_size,
                              args.template, args.max_length, work.path)
    for index, (norm, prob) in enumerate(zip(result["norms"], result["probabilities"])):
        print(f"layer {index:3d}  ||dL_harm/dh|| = {norm:10.4f}  p = {prob:.3f}  {'#' * round(prob * 100)}")
    print(f"saved {args.out}/layer_norms.json and {args.out}/layer_norms.png")


# ------------------------------------------------------------------------------------------- attack

def _attack_options(p) -> None:
    from tvaccine.attack import AttackConfig, AttackSpec
    from tvaccine.evaluation.evaluate import EvalSpec
    from tvaccine.evaluation.progress import ProgressSpec

    _add_output_options(p, "attack adapter, mixture, logs", resume=True)
    _add_fields(p.add_argument_group("attack"), AttackSpec, "spec",
                skip=("train", "eval_every", "progress_eval", "progress_generate"))
    _add_training_options(p, AttackConfig)
    group = p.add_argument_group("progress evaluation: score the model every --progress-every steps (its HS curve)")
    _add_fields(group, ProgressSpec, "progress", prefix="progress_")
    _add_fields(group, EvalSpec, "eval", only=("borderline", "judge", "max_new_tokens_harmful", "max_new_tokens_task",
                                               "forward_refusals", "forward_harmful", "n_forward"))
    _add_set_option(p, "AttackConfig (a training argument)", "--set adam_beta2=0.95 --set max_grad_norm=0.5")


def cmd_attack(args) -> None:
    from tvaccine.attack import AttackConfig, AttackSpec, run_attack
    from tvaccine.config import field_default
    from tvaccine.evaluation.evaluate import EvalSpec
    from tvaccine.evaluation.progress import ProgressSpec

    spec, train = _given(args, "spec"), _given(args, "train")
    _route_assignments(args.set, AttackConfig, "the attack", train, None)
    schedule, scoring = _given(args, "progress"), _given(args, "eval")
    progress = {}
    if "every" in schedule:
        base = {"task": spec.get("task", field_default(AttackSpec, "task")), **scoring}
        if spec.get("eval_harmful"):
            base["eval_harmful"] = spec["eval_harmful"]
        if "template" in spec:
            base["template"] = spec["template"]
        plan = ProgressSpec(**schedule)
        progress = {"eval_every": plan.every, "progress_eval": plan.eval_spec(EvalSpec(**base)),
                    "progress_generate": plan.generate}
    elif schedule or scoring:
        name = next(iter(schedule)) if schedule else next(iter(scoring))
        flag = _flag(("progress_" if schedule else "") + name)
        raise UserError(f"{flag} sets the progress evaluation, which needs --progress-every N")
    attack = AttackSpec(**spec, train=train, **progress)
    _, _, summary = run_attack(attack, args.out, overwrite=args.overwrite, resume=args.resume)
    print(json.dumps(summary, indent=2))


# ------------------------------------------------------------------------------------------- evaluate

def _evaluate_options(p) -> None:
    from tvaccine.evaluation.evaluate import EvalSpec

    _add_output_options(p, "generations, verdicts, scores")
    p.add_argument("--adapter", help="The alignment adapter, merged first (default: none)")
    p.add_argument("--attack-adapter", help="The attack adapter, merged on top (default: none)")
    p.add_argument("--rescore", action="store_true", help="Re-judge the generations saved in --out (only --judge "
                                                          "may change)")
    _add_fields(p.add_argument_group("evaluation"), EvalSpec, "eval")
    _add_model_options(p)


def cmd_evaluate(args) -> None:
    from tvaccine.config import field_default
    from tvaccine.evaluation.evaluate import EvalSpec, evaluate, forward_instrument, score_generations
    from tvaccine.outputs import OutputDir

    values = _given(args, "eval")
    out = Path(args.out)
    if args.rescore:
        changed = sorted(set(values) - {"judge"})
        if changed:
            raise UserError(f"--rescore re-judges the saved answers under their own settings; {_flag(changed[0])} "
                            "cannot change them (only --judge can)")
        saved = out / "eval_spec.json"
        if not (out / "generations_harmful.jsonl").is_file() or not saved.is_file():
            raise UserError(f"{out} holds no saved generations to re-score")
        stored = _saved_eval_spec(saved)
        spec = EvalSpec(**{**stored, "judge": values.get("judge", field_default(EvalSpec, "judge"))})
        _check_saved_generations(out)
        scores = score_generations(out, spec)
    else:
        spec = EvalSpec(**values)
        _warn_eval_counts(spec, set(values))
        _check_model_inputs(args, args.adapter, args.attack_adapter)
        with OutputDir(out, overwrite=args.overwrite) as work:
            model, tokenizer = _load_merged(args, args.adapter)
            instrument = forward_instrument(spec, tokenizer)
            if args.attack_adapter:  # the drift is measured from the model before this adapter
                from tvaccine.models import load_adapter, merge_adapter

                model = load_adapter(model, args.attack_adapter)
                if instrument is not None:
                    with model.disable_adapter():
                        instrument.set_reference(model)
                model = merge_adapter(model)
            scores = evaluate(model, tokenizer, spec, work.path, instrument)
    print(json.dumps(scores, indent=2))


def _saved_eval_spec(saved: Path) -> dict:
    """The settings of saved generations (eval_spec.json), refused by name when they are not EvalSpec's."""
    from tvaccine.config import init_fields
    from tvaccine.evaluation.evaluate import EvalSpec
    from tvaccine.models import read_json_object

    stored = read_json_object(saved)
    if "harmful" in stored:  # written before the field was named eval_harmful
        stored["eval_harmful"] = stored.pop("harmful")
    known = {f.name for f in init_fields(EvalSpec)}
    unknown = sorted(set(stored) - known)
    if unknown:
        raise UserError(f"{saved}: unknown field {unknown[0]!r}; it is not the eval_spec.json of a tvaccine "
                        "evaluation (or comes from another version)")
    return stored


def _check_saved_generations(out: Path) -> None:
    """Each saved answer has the fields that scoring reads, so a hand-edited or foreign file is one line."""
    from tvaccine.models import read_json_object
    from tvaccine.results_io import read_jsonl

    for name, needed in (("harmful", ("instruction", "generation")), ("task", ("generation",)),
                         ("borderline", ("generation",))):
        path = out / f"generations_{name}.jsonl"
        if not path.is_file():
            continue
        wanted = list(needed)
        if name == "task":
            metric = read_json_object(out / "generations_task.meta.json").get("metric")
            wanted += {"number": ["answer"], None: []}.get(metric, ["label"])
        for number, row in enumerate(read_jsonl(path), 1):
            for key in wanted:
                if row.get(key) is None or (key in needed and not isinstance(row[key], str)):
                    raise UserError(f"{path}: line {number} has no {key!r} text; is it a file tvaccine evaluate "
                                    "wrote?")


# ------------------------------------------------------------------------------------------- run / report

def _run_options(p) -> None:
    from tvaccine.config import PRESETS

    group = p.add_mutually_exclusive_group()
    group.add_argument("--preset", choices=PRESETS, help="A built-in run config (default: cpu)")
    group.add_argument("--config", help="A YAML run config, like the presets in src/tvaccine/presets (default: none)")
    p.add_argument("--results", help="Results folder; a rerun reuses its finished stages and keeps the rows of the "
                                     "methods and settings it does not redo (default: results/<name>)")
    p.add_argument("--overwrite", action="store_true", help="Replace the results folder instead of reusing it (only "
                                                            "a tvaccine results folder is ever replaced)")
    p.add_argument("--methods", help="Comma-separated methods to run instead of the config's; stages already in "
                                     "--results are reused (default: the config's)")
    p.add_argument("--seed", metavar="INT[,INT...]", help="Replaces the config's seed; several (42,43,44) run the "
                   "experiment once per seed. Results then go to results/<name>-seed<N...> (default: the config's)")


def cmd_run(args) -> None:
    from tvaccine.config import coerce, load_config
    from tvaccine.pipeline import run_and_report, seed_plans

    config = load_config(args.preset, args.config)
    methods = None
    if args.methods is not None:
        methods = [m.strip() for m in args.methods.split(",") if m.strip()]
        if not methods:
            raise UserError("--methods is empty: name at least one method, e.g. --methods sft,vaccine")
    seeds = None
    if args.seed is not None:
        seeds = coerce(args.seed, int | list[int], "--seed", text=True)
        config["seed"] = seeds
    plans = seed_plans(config, methods)
    name = plans[0].name
    if not args.results and (not name.strip() or name in (".", "..") or "/" in name or "\\" in name):
        raise UserError(f"name: {name!r} is not a folder name, and names the results folder results/<name>: "
                        "use a plain name such as my-run, or pass --results")
    _warn_run_counts(config, plans[0])
    # Another seed's results are never replaced by default.
    suffix = "" if seeds is None else "-seed" + "-".join(str(p.seed) for p in plans)
    results = Path(args.results or f"results/{name}{suffix}")
    start = time.perf_counter()
    try:
        report = run_and_report(plans, results, overwrite=args.overwrite)
    except KeyboardInterrupt as exc:
        raise Interrupted(f"finished stages are kept in {results}: rerun the same command to continue with the "
                          "rest") from exc
    print(report)
    print(f"\nreport: {results / 'report.md'} (wall time {(time.perf_counter() - start) / 60:.1f} min)")


def _report_options(p) -> None:
    p.add_argument("results", help="A `tvaccine run` results folder")
    p.add_argument("--out", help="Folder for report.md and its charts, so that the results folder is left as it "
                                 "is (default: the results folder itself)")


def cmd_report(args) -> None:
    from tvaccine.outputs import RESULTS_KIND, check_output_path, output_kind, write_marker
    from tvaccine.pipeline import load_results
    from tvaccine.report import check_rows, write_report

    results = Path(args.results)
    rows = load_results(results)
    check_rows(results, rows)
    out = Path(args.out) if args.out else results
    if out.resolve() == results.resolve():
        if output_kind(results) != RESULTS_KIND:
            raise UserError(f"{results} is not a tvaccine results folder (no .tvaccine marker), so its files are "
                            "not replaced: pass --out to write the report elsewhere")
    else:
        check_output_path(out, "report folder")
        if out.is_dir() and any(out.iterdir()) and output_kind(out) != "report":
            raise UserError(f"report folder {out} exists and is not empty, and holds no earlier tvaccine report: "
                            "choose another --out")
        out.mkdir(parents=True, exist_ok=True)
        write_marker(out, "report")
    print(write_report(results, rows, out))
    print(f"\nreport: {out / 'report.md'}")


# ------------------------------------------------------------------------------------------- parser

COMMANDS = {
    "generate": ("answer prompts with a model (and optional adapter)", _generate_options, cmd_generate),
    "data": ("list data sources, show one (tvaccine data show builtin:safety), or fetch hub datasets into the "
             "data mirror (tvaccine data fetch beavertails)", _data_options, cmd_data),
    "align": ("align a model with sft, vaccine, t-vaccine, repnoise or tar (LoRA)", _align_options, cmd_align),
    "layers": ("probe which layers are safety-critical (harmful-gradient norms)", _layers_options, cmd_layers),
    "attack": ("harmful fine-tuning attack on an aligned (or non-aligned) model", _attack_options, cmd_attack),
    "evaluate": ("harmful score, fine-tune accuracy and over-refusal of a model", _evaluate_options, cmd_evaluate),
    "run": ("the whole experiment (align, attack, evaluate, report); default preset cpu", _run_options, cmd_run),
    "report": ("table and plots from a results folder", _report_options, cmd_report),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser. With ``only``, the options of that sub-command alone are built ("": none), so the
    others import nothing."""
    parser = _Parser(prog="tvaccine", description=DESCRIPTION, allow_abbrev=False)
    from tvaccine import __version__

    parser.add_argument("--version", action="version", version=f"tvaccine {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help, add_options, run) in COMMANDS.items():
        p = sub.add_parser(name, help=help, description=help[0].upper() + help[1:] + ".", allow_abbrev=False)
        p.set_defaults(func=run)
        if only is None or only == name:
            add_options(p)
            for old, new in RENAMED_FLAGS.get(name, {}).items():
                p.add_argument(old, action=_Renamed, new=new, dest=f"renamed:{old}")
    return parser


def _progress_bars_for_logs() -> None:
    """When stderr goes to a log rather than a terminal, tqdm would stack nested bars (a progress
    evaluation's inside the Trainer's) with cursor-up escape codes that end up in the file; keep every
    bar on its own line and write it less often. tqdm reads these TQDM_* defaults when it is imported,
    which no sub-command has done yet; a user's own TQDM_* settings win."""
    if not sys.stderr.isatty():
        os.environ.setdefault("TQDM_POSITION", "0")
        os.environ.setdefault("TQDM_MININTERVAL", "5")


HUB_COMMANDS = ("generate", "data", "align", "layers", "attack", "evaluate", "run")  # may read from the hub


def _hub_reachable(timeout: float = 2.0) -> bool:
    """One TCP connection to the hub's endpoint, given up after ``timeout`` seconds (a name look-up
    that hangs included)."""
    import socket
    import threading
    from urllib.parse import urlsplit

    url = urlsplit(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    reached = []

    def connect() -> None:
        try:
            socket.create_connection((url.hostname, url.port or (80 if url.scheme == "http" else 443)),
                                     timeout=timeout).close()
            reached.append(True)
        except (OSError, ValueError):
            pass

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(reached)


def _offline_without_network(command: str) -> None:
    """Without a network, each hub look-up retries for half a minute before it fails. When the hub
    cannot be reached, offline mode makes a hub id read the local cache or fail at once, in one line.
    Set before huggingface_hub is imported (it reads the variable then); a user's own HF_HUB_OFFLINE
    and a configured proxy are left to decide."""
    if command not in HUB_COMMANDS or "HF_HUB_OFFLINE" in os.environ or "TRANSFORMERS_OFFLINE" in os.environ:
        return
    if any(os.environ.get(name) for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return
    if not _hub_reachable():
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    _progress_bars_for_logs()
    command = next((a for a in argv if not a.startswith("-")), "")
    _offline_without_network(command)
    try:
        args = build_parser(command if command in COMMANDS else "").parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error already printed on one line
        return int(exc.code or 0)
    except UserError as exc:  # a plug-in method that fails to import, while the options are built
        print(f"tvaccine: error: {exc}", file=sys.stderr)
        return 2
    try:
        args.func(args)
    except UserError as exc:
        print(f"tvaccine: error: {exc}", file=sys.stderr)
        return 2
    except FloatingPointError as exc:
        print(f"tvaccine: training diverged: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        hint = exc.hint if isinstance(exc, Interrupted) else "finished outputs are intact, unfinished ones were " \
                                                             "not written"
        print(f"tvaccine: interrupted: {hint}", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
