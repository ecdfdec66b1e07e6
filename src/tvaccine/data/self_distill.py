"""Benign alignment answers in the model's own voice (self-distillation).

Alignment should change how a model reacts to harmful requests and nothing else. Hand-written benign
answers also teach their own style: the built-in ones average ten words, and a small model trained on
them answers every request in one short sentence that restates it, harmful ones included. Training on
the model's own greedy answers to the benign instructions keeps its style, so the only new thing it
learns is to refuse. Only answers that end with an end-of-turn token are kept: a cut answer would
teach the model to stop mid-sentence.

The answers are generated once per (model weights, instructions, template, token limit, precision)
and cached under the tvaccine cache folder; every alignment saves them with that provenance.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from tvaccine.results_io import read_jsonl, write_json, write_jsonl

# Bumped when the way answers are made changes, so older cached answers are not reused.
PROCEDURE_VERSION = 1


def model_fingerprint(model) -> str:
    """A hash of the model's config and of a slice of every weight: the same weights give the same
    fingerprint wherever they were loaded from; changed weights almost surely do not."""
    digest = hashlib.sha256()
    config = getattr(model, "config", None)
    digest.update(json.dumps(config.to_diff_dict() if config is not None else {}, sort_keys=True,
                             default=str).encode())
    with torch.no_grad():
        for name, param in sorted(model.named_parameters()):
            digest.update(name.encode())
            digest.update(str(tuple(param.shape)).encode())
            digest.update(param.detach().flatten()[:256].float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def _instructions_hash(records: list[dict]) -> str:
    text = json.dumps([[r["instruction"], r.get("input") or ""] for r in records], ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def distill_key(fingerprint: str, records: list[dict], template: str, max_new_tokens: int, precision: str) -> dict:
    """Everything the answers depend on; its hash names the cache entry."""
    return {"procedure": PROCEDURE_VERSION, "model": fingerprint, "instructions": _instructions_hash(records),
            "n_instructions": len(records), "template": template, "max_new_tokens": max_new_tokens,
            "decoding": "greedy", "precision": precision}


def self_distilled(model, tokenizer, records: list[dict], template: str, max_new_tokens: int, precision: str,
                   cache: Path, batch_size: int = 16, log=print) -> tuple[list[dict], dict]:
    """``records`` with the model's own answers as ``output``, keeping those that ended on their own;
    returns them and their provenance (the key, counts, whether the cache was used)."""
    from tvaccine.evaluation.generation import generate

    key = distill_key(model_fingerprint(model), records, template, max_new_tokens, precision)
    name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    path = Path(cache) / f"{name}.jsonl"
    cached = path.is_file()
    if cached:
        rows = read_jsonl(path)
    else:
        log(f"self-distillation: answering {len(records)} benign instructions with the model itself "
            f"(greedy, up to {max_new_tokens} tokens; cached for later runs)")
        generations = generate(model, tokenizer, records, template, max_new_tokens, batch_size,
                               progress="self-distillation")
        rows = [{"instruction": r["instruction"], "input": r.get("input") or "", "output": g.text,
                 "ended": not g.hit_token_limit and not g.prompt_truncated and bool(g.text)}
                for r, g in zip(records, generations)]
        write_jsonl(path, rows)
        write_json(path.with_suffix(".json"), key)
    kept = [{"instruction": r["instruction"], "input": r["input"], "output": r["output"]} for r in rows if r["ended"]]
    words = [len(r["output"].split()) for r in kept]
    provenance = {**key, "cache_file": str(path), "from_cache": cached, "answered": len(rows), "kept": len(kept),
                  "mean_words": sum(words) / len(words) if words else 0.0}
    return kept, provenance
