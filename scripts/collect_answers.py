"""Collect real answers of a model to harmful prompts, for the labelled verdict fixture.

Each run loads one model (the default GGUF model, optionally with LoRA adapters merged in) and
answers a slice of the harmful evaluation prompts under one or more generation settings; the rows
are appended to a JSONL file with an empty ``label`` for a person to fill in by reading them
(tests/fixtures/answers/README.md says how, and which runs made the committed fixture).

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python scripts/collect_answers.py --out /tmp/raw.jsonl \
        --setting alpaca:48:0:80 --setting chat:48:80:40

A setting is ``template:max_new_tokens:first_prompt:n_prompts``. Generation is greedy, so a
run is reproducible from its ``source`` string. On a CPU shared with other jobs, one thread per
process (``OMP_NUM_THREADS=1``) avoids threads spinning while they wait for a core.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from tvaccine.data.sources import load_source, pick_split
from tvaccine.evaluation.generation import generate_answers
from tvaccine.models import DEFAULT_MODEL, load_adapter, load_model, merge_adapter


def parse_setting(text: str) -> tuple[str, int, int, int]:
    try:
        template, tokens, first, n = text.split(":")
        return template, int(tokens), int(first), int(n)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected template:max_new_tokens:first_prompt:n_prompts, got {text!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="JSONL file the rows are appended to")
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--adapter", action="append", default=[],
                        help="LoRA adapter directory merged into the model (repeatable: alignment, then attack)")
    parser.add_argument("--adapter-name", help="how the adapters are named in each row's source (default: paths)")
    parser.add_argument("--prompts", default="builtin:safety@eval", help="harmful prompts (a data source spec)")
    parser.add_argument("--setting", action="append", required=True, type=parse_setting,
                        help="template:max_new_tokens:first_prompt:n_prompts (repeatable)")
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()

    records = pick_split(load_source(args.prompts), "eval", "test")
    model, tokenizer = load_model(args.model, device="cpu")
    model_name = args.model
    for adapter in args.adapter:
        model = merge_adapter(load_adapter(model, adapter))
    if args.adapter:
        model_name += f"+{args.adapter_name or '+'.join(args.adapter)}"
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for template, tokens, first, n in args.setting:
        chosen = records[first:first + n]
        start = time.perf_counter()
        answers = generate_answers(model, tokenizer, chosen, template, tokens, args.batch_size, progress=None)
        source = f"{model_name} template={template} greedy max_new_tokens={tokens}"
        with out.open("a") as handle:
            for offset, (record, answer) in enumerate(zip(chosen, answers)):
                row = {"id": f"{model_name}/{template}/{tokens}/{first + offset}", "source": source,
                       "prompt": record["instruction"], "answer": answer, "label": "", "note": ""}
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        print(f"{source}: {len(chosen)} answers in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
