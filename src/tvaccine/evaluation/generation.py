"""Batched greedy generation (left padding, KV cache), the way every score in this project is made."""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from tvaccine.data.formatting import format_prompt


@torch.no_grad()
def generate_answers(model, tokenizer, records: list[dict], template: str = "alpaca", max_new_tokens: int = 128,
                     batch_size: int = 8, progress: str | None = "generating") -> list[str]:
    """One answer per record, in order. Greedy, so the same model gives the same answers."""
    model.eval()
    device = next(model.parameters()).device
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    answers: list[str] = []
    try:
        starts = range(0, len(records), batch_size)
        for start in tqdm(starts, desc=progress, disable=progress is None, unit="batch"):
            prompts = [format_prompt(r, tokenizer, template) for r in records[start:start + batch_size]]
            batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=template != "chat")
            batch = {k: v.to(device) for k, v in batch.items()}
            output = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False, use_cache=True,
                                    pad_token_id=tokenizer.pad_token_id, temperature=None, top_p=None, top_k=None)
            new_tokens = output[:, batch["input_ids"].shape[1]:]
            answers.extend(t.strip() for t in tokenizer.batch_decode(new_tokens, skip_special_tokens=True))
    finally:
        tokenizer.padding_side = side
    return answers
