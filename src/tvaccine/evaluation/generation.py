"""Batched greedy generation (left padding, KV cache), the way every score in this project is made.

Each answer stops at the first end-of-turn token, and records how it ended: an answer cut by the
token limit, or one whose prompt was cut to fit the context, is not the model's whole reply, so a
report should say how many there were.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from tvaccine.data.formatting import fit_prompt, max_token_chars, resolve_template, stop_token_ids
from tvaccine.errors import UserError

# Config attributes that hold a model's context length, by family (Llama, GPT-2, ...).
_CONTEXT_ATTRIBUTES = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx")
# Tokenizers without a known limit report a huge sentinel (about 1e30) as model_max_length.
_NO_LIMIT = 10**9


@dataclass
class Generation:
    text: str
    hit_token_limit: bool  # ran to max_new_tokens without an end-of-turn token
    prompt_truncated: bool  # the prompt was cut to fit the model's context


def context_length(model, tokenizer) -> int | None:
    """The most tokens the model attends over: the smallest limit its config and tokenizer state."""
    config = getattr(model, "config", None)
    config = getattr(config, "get_text_config", lambda: config)()
    limits = [getattr(config, name, None) for name in _CONTEXT_ATTRIBUTES]
    limits.append(getattr(tokenizer, "model_max_length", None))
    limits = [n for n in limits if isinstance(n, int) and 0 < n < _NO_LIMIT]
    return min(limits) if limits else None


def prompt_budget(model, tokenizer, max_new_tokens: int) -> int | None:
    """Prompt tokens that fit next to ``max_new_tokens`` new ones in the model's context."""
    if max_new_tokens < 1:
        raise UserError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    context = context_length(model, tokenizer)
    if context is None:
        return None
    if max_new_tokens >= context:
        raise UserError(f"max_new_tokens {max_new_tokens} leaves no room for a prompt in the model's context of "
                        f"{context} tokens; use fewer than {context}")
    return context - max_new_tokens


@torch.no_grad()
def generate(model, tokenizer, records: list[dict], template: str = "auto", max_new_tokens: int = 128,
             batch_size: int = 8, progress: str | None = "generating") -> list[Generation]:
    """One answer per record, in order. Greedy, so the same model gives the same answers."""
    template = resolve_template(tokenizer, template)
    budget = prompt_budget(model, tokenizer, max_new_tokens)
    stops = stop_token_ids(tokenizer, model)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
    token_chars = max_token_chars(tokenizer)
    model.eval()
    device = next(model.parameters()).device
    results: list[Generation] = []
    for start in tqdm(range(0, len(records), batch_size), desc=progress, disable=progress is None, unit="batch"):
        fitted = [fit_prompt(r, tokenizer, template, budget, token_chars) for r in records[start:start + batch_size]]
        width = max(len(ids) for ids, _ in fitted)
        input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids, _ in fitted], device=device)
        mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids, _ in fitted], device=device)
        output = model.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                do_sample=False, use_cache=True, pad_token_id=pad, eos_token_id=stops,
                                temperature=None, top_p=None, top_k=None)
        for new, (_, truncated) in zip(output[:, width:].tolist(), fitted):
            end = next((i for i, token in enumerate(new) if token in stops), None)
            text = tokenizer.decode(new[:end], skip_special_tokens=True).strip()
            results.append(Generation(text, hit_token_limit=end is None, prompt_truncated=truncated))
    return results


def generate_answers(model, tokenizer, records: list[dict], template: str = "auto", max_new_tokens: int = 128,
                     batch_size: int = 8, progress: str | None = "generating") -> list[str]:
    """The answers' text alone, for callers that do not report how answers ended."""
    return [g.text for g in generate(model, tokenizer, records, template, max_new_tokens, batch_size, progress)]


def generation_counts(generations: list[Generation]) -> dict:
    """How many answers the token limit cut, and how many prompts were cut to fit the context."""
    return {"n": len(generations), "cut_by_token_limit": sum(g.hit_token_limit for g in generations),
            "prompts_truncated": sum(g.prompt_truncated for g in generations)}
