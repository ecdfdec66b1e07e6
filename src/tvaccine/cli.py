"""The ``tvaccine`` command. Sub-commands only parse, validate and call into the package."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import yaml

from tvaccine.errors import UserError


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    from tvaccine.models import DEFAULT_MODEL

    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help=f"hub id, local directory or .gguf file (default: {DEFAULT_MODEL}, offline)")
    parser.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], help="default: fp32 on CPU, bf16 on GPU")
    parser.add_argument("--trust-remote-code", action="store_true", help="allow custom modeling code from the hub")
    parser.add_argument("--allow-pickle", action="store_true", help="allow pickled .bin weights (can run code)")


def _load(args, adapter: str | None = None):
    from tvaccine.models import check_adapter, load_adapter, load_model

    if adapter:
        check_adapter(adapter)  # fail on a wrong path before the model loads
    model, tokenizer = load_model(args.model, dtype=args.dtype, trust_remote_code=args.trust_remote_code,
                                  allow_pickle=args.allow_pickle)
    if adapter:
        model = load_adapter(model, adapter)
    return model, tokenizer


# ------------------------------------------------------------------------------------------- generate

def cmd_generate(args) -> None:
    from tvaccine.evaluation.generation import generate_answers

    prompts = list(args.prompt)
    if args.prompts_file:
        path = Path(args.prompts_file)
        if not path.is_file():
            raise UserError(f"prompts file not found: {path}")
        prompts += [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not prompts:
        raise UserError("no prompt given: pass one as an argument or use --prompts-file")
    start = time.perf_counter()
    model, tokenizer = _load(args, args.adapter)
    print(f"[model loaded in {time.perf_counter() - start:.1f} s]", file=sys.stderr)
    answers = generate_answers(model, tokenizer, [{"instruction": p} for p in prompts], args.template,
                               args.max_new_tokens, args.batch_size, progress=None if len(prompts) == 1 else "generating")
    for prompt, answer in zip(prompts, answers):
        print(answer if len(prompts) == 1 else f"### {prompt}\n{answer}\n")


# ------------------------------------------------------------------------------------------- data

def cmd_data(args) -> None:
    from tvaccine.data.formatting import format_prompt
    from tvaccine.data.sources import available_sources, load_source

    if args.action == "list" or not args.source:
        for name, help in available_sources().items():
            print(f"{name:14s} {help}")
        return
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
        print(format_prompt(record, template="alpaca") + record.get("output", ""))


# ------------------------------------------------------------------------------------------- align

_METHOD_OPTIONS = {  # CLI flag -> config field, for the method knobs
    "rho": "rho", "tau": "perturbation_interval", "layers_per_draw": "layers_per_draw",
    "resample_every": "resample_every", "probe_every": "probe_every", "probe_samples": "probe_samples",
    "probability_temperature": "probability_temperature",
}


def cmd_align(args) -> None:
    from tvaccine.alignment import AlignSpec, run_alignment

    train = {"learning_rate": args.lr, "per_device_train_batch_size": args.batch_size,
             "gradient_accumulation_steps": args.grad_accum, "num_train_epochs": args.epochs,
             "use_cpu": args.cpu}
    if args.max_steps:
        train["max_steps"] = args.max_steps
    if args.save_steps:
        train.update(save_strategy="steps", save_steps=args.save_steps, save_total_limit=2)
    if args.method not in ("vaccine", "t-vaccine") and any(getattr(args, f) is not None for f in _METHOD_OPTIONS):
        raise UserError(f"--rho/--tau/--layers-per-draw/... do not apply to --method {args.method}")
    for flag, name in _METHOD_OPTIONS.items():
        if getattr(args, flag) is not None:
            if args.method == "vaccine" and flag not in ("rho", "tau"):
                raise UserError(f"--{flag.replace('_', '-')} applies to --method t-vaccine only")
            train[name] = getattr(args, flag)
    for item in args.set or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--set expects key=value, got {item!r}")
        train[key.strip().replace("-", "_")] = yaml.safe_load(value)
    spec = AlignSpec(method=args.method, model=args.model, safety_data=args.data, benign_data=args.benign or None,
                     n_safety=args.n_safety, n_benign=args.n_benign, probe_data=args.harmful,
                     template=args.template, max_length=args.max_length, lora_r=args.lora_r,
                     lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout, seed=args.seed, dtype=args.dtype,
                     trust_remote_code=args.trust_remote_code, allow_pickle=args.allow_pickle, train=train)
    summary = run_alignment(spec, args.out, overwrite=args.overwrite, resume=args.resume)
    print(json.dumps(summary, indent=2))


# ------------------------------------------------------------------------------------------- layers

def cmd_layers(args) -> None:
    from tvaccine.data.sources import load_source, pick_split
    from tvaccine.layer_report import probe_layers

    records = pick_split(load_source(args.harmful), "harmful", "train")  # validated before the model loads
    if (Path(args.out) / "layer_norms.json").exists() and not args.overwrite:
        raise UserError(f"{args.out} already holds a layer probe; pass --overwrite to replace it")
    model, tokenizer = _load(args, args.adapter)
    result = probe_layers(model, tokenizer, records, args.harmful, args.samples, args.batch_size, args.template,
                          args.max_length, Path(args.out))
    for index, (norm, prob) in enumerate(zip(result["norms"], result["probabilities"])):
        print(f"layer {index:3d}  ||dL_harm/dh|| = {norm:10.4f}  p = {prob:.3f}  {'#' * round(prob * 100)}")
    print(f"saved {args.out}/layer_norms.json and {args.out}/layer_norms.png")


# ------------------------------------------------------------------------------------------- attack

def cmd_attack(args) -> None:
    from tvaccine.attack import AttackSpec, run_attack
    from tvaccine.evaluation.evaluate import EvalSpec
    from tvaccine.evaluation.progress import ProgressSpec

    progress_eval = None
    if args.eval_every:
        progress = ProgressSpec(every=args.eval_every, n_harmful=args.eval_n_harmful, n_task=args.eval_n_task,
                                n_borderline=args.eval_n_borderline)
        progress.validate()
        progress_eval = progress.eval_spec(EvalSpec(
            harmful=args.eval_harmful or "builtin:safety@eval", task=args.task, judge=args.judge,
            template=args.template, max_new_tokens_harmful=args.eval_max_new_tokens,
            max_new_tokens_task=args.eval_max_new_tokens_task))
    spec = AttackSpec(model=args.model, aligned_adapter=args.adapter, task=args.task, harmful=args.harmful,
                      eval_harmful=args.eval_harmful or None, n=args.n, p=args.p, learning_rate=args.lr,
                      epochs=args.epochs, max_steps=args.max_steps, batch_size=args.batch_size,
                      max_length=args.max_length, template=args.template, seed=args.seed, dtype=args.dtype,
                      use_cpu=args.cpu, save_steps=args.save_steps or None, allow_pickle=args.allow_pickle,
                      trust_remote_code=args.trust_remote_code, eval_every=args.eval_every, progress_eval=progress_eval)
    _, _, summary = run_attack(spec, args.out, overwrite=args.overwrite, resume=args.resume)
    print(json.dumps(summary, indent=2))


# ------------------------------------------------------------------------------------------- evaluate

def cmd_evaluate(args) -> None:
    from tvaccine.attack import AttackSpec, load_aligned
    from tvaccine.evaluation.evaluate import EvalSpec, evaluate, evaluation_sets, score_generations
    from tvaccine.evaluation.judges import check_judge
    from tvaccine.models import check_adapter, load_adapter, merge_adapter

    spec = EvalSpec(harmful=args.harmful, task=args.task or None, borderline=args.borderline or None,
                    n_harmful=args.n_harmful, n_task=args.n_task, n_borderline=args.n_borderline,
                    judge=args.judge, template=args.template, max_new_tokens_harmful=args.max_new_tokens_harmful,
                    max_new_tokens_task=args.max_new_tokens_task, batch_size=args.batch_size)
    out = Path(args.out)
    if args.rescore:
        saved = out / "eval_spec.json"
        if not (out / "generations_harmful.jsonl").is_file() or not saved.is_file():
            raise UserError(f"{out} holds no saved generations to re-score")
        # Re-judge what was generated, under the settings it was generated with; only the judge changes.
        check_judge(args.judge)
        spec = EvalSpec(**{**json.loads(saved.read_text()), "judge": args.judge})
        scores = score_generations(out, spec)
    else:
        spec.validate()
        evaluation_sets(spec)
        check_judge(spec.judge)
        if args.attack_adapter:
            check_adapter(args.attack_adapter)
        if (out / "scores.json").exists() and not args.overwrite:
            raise UserError(f"{out} already holds scores; pass --overwrite, or --rescore to re-judge saved answers")
        model, tokenizer = load_aligned(AttackSpec(model=args.model, aligned_adapter=args.adapter, dtype=args.dtype,
                                                   allow_pickle=args.allow_pickle,
                                                   trust_remote_code=args.trust_remote_code))
        if args.attack_adapter:
            model = merge_adapter(load_adapter(model, args.attack_adapter))
        scores = evaluate(model, tokenizer, spec, out)
    print(json.dumps(scores, indent=2))


# ------------------------------------------------------------------------------------------- run / report

def cmd_run(args) -> None:
    from tvaccine.pipeline import load_config, load_results, run_experiment
    from tvaccine.report import write_report

    config = load_config(args.preset, args.config)
    if args.methods:
        config["methods"] = [m.strip() for m in args.methods.split(",") if m.strip()]
    name = config.get("name", args.preset or "run")
    if args.seed is not None:
        config["seed"] = args.seed
        name = f"{name}-seed{args.seed}"  # never replaces another seed's results by default
    results = Path(args.results or f"results/{name}")
    start = time.perf_counter()
    run_experiment(config, results)
    print(write_report(results, load_results(results)))
    print(f"\nreport: {results / 'report.md'} (wall time {(time.perf_counter() - start) / 60:.1f} min)")


def cmd_report(args) -> None:
    from tvaccine.pipeline import load_results
    from tvaccine.report import write_report

    print(write_report(Path(args.results), load_results(args.results)))
    print(f"\nreport: {Path(args.results) / 'report.md'}")


# ------------------------------------------------------------------------------------------- parser

def build_parser() -> argparse.ArgumentParser:
    from tvaccine.data.formatting import TEMPLATES
    from tvaccine.methods import METHODS

    parser = argparse.ArgumentParser(prog="tvaccine", description="Alignment-stage defenses against harmful "
                                     "fine-tuning: align (SFT/Vaccine/T-Vaccine), attack, evaluate, report.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("generate", help="answer prompts with a model (and optional adapter)")
    p.add_argument("prompt", nargs="*", help="prompt(s) to answer")
    p.add_argument("--prompts-file", help="a text file with one prompt per line")
    p.add_argument("--adapter", help="a LoRA adapter directory to apply")
    p.add_argument("--template", choices=TEMPLATES, default="alpaca")
    p.add_argument("--max-new-tokens", type=_positive_int, default=128)
    p.add_argument("--batch-size", type=_positive_int, default=8)
    _add_model_args(p)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("data", help="list data sources, or show one: tvaccine data show builtin:safety")
    p.add_argument("action", choices=["list", "show"])
    p.add_argument("source", nargs="?", help="source spec: name[:path][@split]")
    p.add_argument("--n", type=int, default=2, help="formatted examples to print")
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("align", help="align a model with SFT, Vaccine or T-Vaccine (LoRA)")
    p.add_argument("--method", choices=list(METHODS), default="sft")
    p.add_argument("--out", required=True, help="output directory (adapter, logs, costs)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from its last checkpoint")
    p.add_argument("--save-steps", type=int, default=50, help="checkpoint every N steps (0: never)")
    p.add_argument("--data", default="builtin:safety@align", help="harmful prompts with refusals")
    p.add_argument("--benign", default="builtin:helpful@train", help="benign instructions mixed in ('' for none)")
    p.add_argument("--n-safety", type=int, help="cap on refusal samples (default: all)")
    p.add_argument("--n-benign", type=int, help="benign samples (default: as many as refusal samples)")
    p.add_argument("--harmful", default="builtin:safety@harmful", help="T-Vaccine's harmful probe data")
    p.add_argument("--template", choices=TEMPLATES, default="alpaca")
    p.add_argument("--max-length", type=int, default=200)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--max-steps", type=int, help="stop after this many optimizer steps")
    p.add_argument("--batch-size", type=_positive_int, default=8)
    p.add_argument("--grad-accum", type=_positive_int, default=1)
    p.add_argument("--lora-r", type=int, default=8)
    p.add_argument("--lora-alpha", type=int, default=4)
    p.add_argument("--lora-dropout", type=float, default=0.1)
    p.add_argument("--rho", type=float, help="perturbation budget (Vaccine 2, T-Vaccine 3)")
    p.add_argument("--tau", type=int, help="accelerated Vaccine: new perturbation every tau micro-batches")
    p.add_argument("--layers-per-draw", type=int, help="T-Vaccine S (default 8, or depth/4 if < 32 layers)")
    p.add_argument("--resample-every", type=int, help="T-Vaccine J (default 20)")
    p.add_argument("--probe-every", type=int, help="T-Vaccine K (default 200)")
    p.add_argument("--probe-samples", type=int, help="T-Vaccine probe size (default 200)")
    p.add_argument("--probability-temperature", type=float, help="non-paper variant: p ~ s^(1/T)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="any other field of the method's config, e.g. --set alpha=0.2 (RepNoise), "
                        "--set tamper_weight=4 (TAR), --set warmup_steps=0.1")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--cpu", action="store_true", help="train on the CPU even if a GPU is present")
    _add_model_args(p)
    p.set_defaults(func=cmd_align)

    p = sub.add_parser("layers", help="probe which layers are safety-critical (harmful-gradient norms)")
    p.add_argument("--harmful", default="builtin:safety@harmful")
    p.add_argument("--adapter", help="probe an aligned model: its LoRA adapter directory")
    p.add_argument("--samples", type=_positive_int, default=64)
    p.add_argument("--batch-size", type=_positive_int, default=8)
    p.add_argument("--template", choices=TEMPLATES, default="alpaca")
    p.add_argument("--max-length", type=_positive_int, default=200)
    p.add_argument("--out", default="runs/layers")
    p.add_argument("--overwrite", action="store_true")
    _add_model_args(p)
    p.set_defaults(func=cmd_layers)

    p = sub.add_parser("attack", help="harmful fine-tuning attack on an aligned (or non-aligned) model")
    p.add_argument("--adapter", help="the alignment LoRA adapter to merge first (omit: non-aligned model)")
    p.add_argument("--out", required=True)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--resume", action="store_true", help="continue an interrupted attack from its last checkpoint")
    p.add_argument("--save-steps", type=int, default=50, help="checkpoint every N steps (0: never)")
    p.add_argument("--task", default="builtin:sentiment", help="the user's benign task data")
    p.add_argument("--harmful", default="builtin:safety@harmful", help="harmful prompt + compliant answer data")
    p.add_argument("--eval-harmful", default="builtin:safety@eval", help="HS prompts that must not be trained on")
    p.add_argument("--n", type=_positive_int, default=1000)
    p.add_argument("--p", type=float, default=0.1, help="harmful ratio")
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--epochs", type=float, default=20.0)
    p.add_argument("--max-steps", type=int)
    p.add_argument("--batch-size", type=_positive_int, default=10)
    p.add_argument("--max-length", type=_positive_int, default=200)
    p.add_argument("--template", choices=TEMPLATES, default="alpaca")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--cpu", action="store_true")
    p.add_argument("--eval-every", type=_positive_int,
                   help="score HS / over-refusal / FA every N steps (and before the first) on a fixed subset")
    p.add_argument("--eval-n-harmful", type=int, default=32, help="harmful prompts per progress evaluation")
    p.add_argument("--eval-n-task", type=int, default=16, help="task prompts per progress evaluation (0: no FA)")
    p.add_argument("--eval-n-borderline", type=int, default=16, help="borderline prompts (0: no over-refusal)")
    p.add_argument("--eval-max-new-tokens", type=_positive_int, default=64, help="tokens per harmful answer")
    p.add_argument("--eval-max-new-tokens-task", type=_positive_int, default=200, help="tokens per task answer")
    p.add_argument("--judge", default="refusal", help="judge of the progress evaluations")
    _add_model_args(p)
    p.set_defaults(func=cmd_attack)

    p = sub.add_parser("evaluate", help="harmful score, fine-tune accuracy and over-refusal of a model")
    p.add_argument("--adapter", help="alignment adapter (merged first)")
    p.add_argument("--attack-adapter", help="attack adapter applied on top")
    p.add_argument("--out", required=True)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--rescore", action="store_true", help="re-judge the generations saved in --out")
    p.add_argument("--harmful", default="builtin:safety@eval")
    p.add_argument("--task", default="builtin:sentiment", help="'' to skip fine-tune accuracy")
    p.add_argument("--borderline", default="builtin:borderline", help="'' to skip over-refusal")
    p.add_argument("--n-harmful", type=int, default=500)
    p.add_argument("--n-task", type=int, default=500)
    p.add_argument("--n-borderline", type=int, default=100)
    p.add_argument("--judge", default="refusal", help="refusal | beaver-dam[:path] | llama-guard[:id] | hf:<id>")
    p.add_argument("--template", choices=TEMPLATES, default="alpaca")
    p.add_argument("--max-new-tokens-harmful", type=_positive_int, default=128)
    p.add_argument("--max-new-tokens-task", type=_positive_int, default=200)
    p.add_argument("--batch-size", type=_positive_int, default=16)
    _add_model_args(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("run", help="the whole experiment (align, attack, evaluate, report); default preset cpu")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--preset", choices=["smoke", "cpu", "paper"])
    group.add_argument("--config", help="a YAML run config")
    p.add_argument("--results", help="results directory (default results/<name>); reruns reuse finished stages")
    p.add_argument("--methods", help="the full comma-separated method list instead of the config's; stages "
                                     "already in --results are reused (so listing two more runs only those)")
    p.add_argument("--seed", type=int, help="replaces the config's seed (default results: results/<name>-seed<N>)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("report", help="table and plots from a results directory")
    p.add_argument("results")
    p.set_defaults(func=cmd_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed a one-line usage error; its code is 2
        return int(exc.code or 0)
    try:
        args.func(args)
    except UserError as exc:
        print(f"tvaccine: error: {exc}", file=sys.stderr)
        return 2
    except FloatingPointError as exc:
        print(f"tvaccine: training diverged: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("tvaccine: interrupted; finished outputs are intact, unfinished ones were not written "
              "(rerun the same command with --resume to continue from the last checkpoint, "
              "or without it to start over)", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
