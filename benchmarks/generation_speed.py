"""Batched generation against one prompt at a time, both through the project's own ``generate_answers``.

    python benchmarks/generation_speed.py                                  # default model, 32 prompts
    python benchmarks/generation_speed.py --model tiny-random-llama --prompts 4 --max-new-tokens 4

Every score in this project is made by ``generate_answers``, so its batching decides how long an
evaluation takes. Both modes answer the same prompts (the first N harmful evaluation prompts,
greedy, the same number of new tokens at most) after one warm-up call; the report gives both
wall times, the speed-up, and how many answers came out identical (left padding may change a
greedy answer in low precision). Results go to ``<out>/<device>.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from step_cost import ROOT, cpu_model, device_slug, header  # noqa: E402


def time_generation(model, tokenizer, records: list[dict], batch_size: int, max_new_tokens: int,
                    template: str | None) -> dict:
    """Wall time of one ``generate_answers`` call over ``records``, and its answers."""
    import torch

    from tvaccine.evaluation.generation import generate_answers

    device = next(model.parameters()).device
    options = {"template": template} if template else {}  # None: the function's own default
    start = time.perf_counter()
    answers = generate_answers(model, tokenizer, records, max_new_tokens=max_new_tokens, batch_size=batch_size,
                               progress=None, **options)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return {"batch_size": batch_size, "wall_s": time.perf_counter() - start, "answers": answers}


def compare(model, tokenizer, records: list[dict], batch_size: int, max_new_tokens: int,
            template: str | None = None) -> dict:
    """One prompt at a time, then ``batch_size`` at a time, on the same prompts."""
    time_generation(model, tokenizer, records[:1], 1, 2, template)  # warm-up: kernels, allocator, caches
    single = time_generation(model, tokenizer, records, 1, max_new_tokens, template)
    batched = time_generation(model, tokenizer, records, batch_size, max_new_tokens, template)
    identical = sum(a == b for a, b in zip(single["answers"], batched["answers"]))
    return {"single": single, "batched": batched, "speedup": single["wall_s"] / batched["wall_s"],
            "identical_answers": identical}


def markdown(report: dict, command: str) -> str:
    settings, result = report["settings"], report["result"]
    lines = ["| mode | prompts per call | wall (s) | s per prompt | speed-up |", "|---|---|---|---|---|"]
    for name, mode in (("one prompt at a time", "single"), ("batched", "batched")):
        run = result[mode]
        lines.append(f"| {name} | {run['batch_size']} | {run['wall_s']:.2f} | "
                     f"{run['wall_s'] / settings['prompts']:.3f} | "
                     f"{result['single']['wall_s'] / run['wall_s']:.2f}x |")
    return (header(command, report["device"], report["dtype"]) + "\n" + "\n".join(lines) + "\n\n"
            f"- model {settings['model']}, the first {settings['prompts']} prompts of {settings['data']} "
            f"({report['instruction_tokens']['min']}-{report['instruction_tokens']['max']} tokens of instruction), "
            f"greedy, at most {settings['max_new_tokens']} new tokens, template "
            f"{settings['template'] or 'default'}; one warm-up call first.\n"
            f"- answers identical in both modes: {result['identical_answers']} of {settings['prompts']}.\n")


def main(argv: list[str] | None = None) -> int:
    from tvaccine.models import DEFAULT_MODEL

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL, help="hub id, directory, .gguf or tiny-random-llama")
    parser.add_argument("--data", default="builtin:safety@eval", help="where the prompts come from")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--template", help="prompt template (default: generate_answers' own default)")
    parser.add_argument("--dtype", help="fp32, bf16 or fp16 (default: bf16 on a GPU, fp32 on CPU)")
    parser.add_argument("--cpu", action="store_true", help="run on CPU even when a GPU is present")
    parser.add_argument("--threads", type=int, help="CPU threads (default: torch's). On a shared machine use 1: "
                                                    "a thread waiting for a busy core stalls every small operation")
    parser.add_argument("--out", default=str(ROOT / "docs" / "results" / "generation_speed"),
                        help="folder for <device>.md and <device>.json")
    args = parser.parse_args(argv)
    command = "python " + shlex.join(["benchmarks/generation_speed.py", *(sys.argv[1:] if argv is None else argv)])

    import torch

    from tvaccine.data.sources import load_source, pick_split
    from tvaccine.errors import UserError
    from tvaccine.models import load_model

    try:
        if args.prompts < 1 or args.max_new_tokens < 1 or args.batch_size < 2 or (args.threads or 1) < 1:
            raise UserError(f"need >= 1 prompt, >= 1 new token, a batch size >= 2 and >= 1 thread, got "
                            f"{args.prompts}, {args.max_new_tokens}, {args.batch_size}, {args.threads}")
        if args.threads:
            torch.set_num_threads(args.threads)
        records = pick_split(load_source(args.data), "eval", "test")[:args.prompts]
        if len(records) < args.prompts:
            raise UserError(f"{args.data} holds {len(records)} prompts, {args.prompts} asked for")
        model, tokenizer = load_model(args.model, dtype=args.dtype, device="cpu" if args.cpu else None)
        lengths = [len(tokenizer(r["instruction"], add_special_tokens=False)["input_ids"]) for r in records]
    except UserError as exc:
        print(f"generation_speed: error: {exc}", file=sys.stderr)
        return 2
    device = next(model.parameters()).device
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    result = compare(model, tokenizer, records, args.batch_size, args.max_new_tokens, args.template)
    report = {"command": command, "settings": {k: v for k, v in vars(args).items() if k != "out"},
              "device": name if device.type == "cuda"
              else f"cpu ({cpu_model()}, torch threads: {torch.get_num_threads()})",
              "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
              "instruction_tokens": {"min": min(lengths), "max": max(lengths), "mean": sum(lengths) / len(lengths)},
              "result": result}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / device_slug(name)
    stem.with_suffix(".json").write_text(json.dumps(report, indent=1))
    stem.with_suffix(".md").write_text(markdown(report, command))
    print(stem.with_suffix(".md").read_text())
    print(f"written: {stem.with_suffix('.md')}, {stem.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
