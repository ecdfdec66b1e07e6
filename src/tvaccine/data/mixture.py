"""The user's fine-tuning data in the harmful fine-tuning attack: n samples, a fraction p harmful."""

from __future__ import annotations

import random

from tvaccine.data.sources import require_outputs
from tvaccine.errors import UserError


def _prompt_key(record: dict) -> tuple[str, str]:
    return record["instruction"].strip().lower(), (record.get("input") or "").strip().lower()


def build_mixture(benign: list[dict], harmful: list[dict], n: int, p: float, seed: int = 0,
                  eval_prompts: list[dict] = ()) -> list[dict]:
    """Exactly round(p*n) harmful + the rest benign records, shuffled with ``seed``.

    Each record gets ``is_harmful``. No harmful training prompt may also be an evaluation prompt,
    or the harmful score would measure memorisation.
    """
    if not 0 <= p <= 1:
        raise UserError(f"harmful ratio p must be in [0, 1], got {p}")
    if n < 1:
        raise UserError(f"number of fine-tuning samples n must be >= 1, got {n}")
    require_outputs(harmful, "the attack's harmful data")
    require_outputs(benign, "the attack's task data")
    n_harmful = round(p * n)
    n_benign = n - n_harmful
    if n_harmful > len(harmful):
        raise UserError(f"n*p = {n_harmful} harmful samples asked for, but the harmful source holds {len(harmful)}")
    if n_benign > len(benign):
        raise UserError(f"n*(1-p) = {n_benign} benign samples asked for, but the task source holds {len(benign)}")
    rng = random.Random(seed)
    chosen_harmful = rng.sample(harmful, n_harmful)
    chosen_benign = rng.sample(benign, n_benign)
    eval_keys = {_prompt_key(r) for r in eval_prompts}
    leaked = [r["instruction"] for r in chosen_harmful if _prompt_key(r) in eval_keys]
    if leaked:
        raise UserError(f"{len(leaked)} harmful training prompts are also evaluation prompts, e.g. {leaked[0][:60]!r}")
    mixture = [{**r, "is_harmful": True} for r in chosen_harmful] + \
              [{**r, "is_harmful": False} for r in chosen_benign]
    rng.shuffle(mixture)
    return mixture
