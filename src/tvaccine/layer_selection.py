"""Which decoder layers are safety-critical, and which ones T-Vaccine trains next.

The probe measures s_l = ||dL_harm/dh_l||, the gradient norm of the loss on harmful data
(harmful prompt + compliant answer) with respect to each layer's attention output, and turns it
into sampling probabilities p_l = s_l / sum(s). Layers with a large harmful gradient are the ones
harmful fine-tuning moves most, so they are the ones worth vaccinating.
"""

from __future__ import annotations

from typing import Callable, Iterable

import torch

from tvaccine.perturbation import AttentionHooks, attention_output_grads


def probe_harmful_gradient_norms(hooks: AttentionHooks, batches: Iterable[dict],
                                 loss_fn: Callable[[dict], torch.Tensor]) -> torch.Tensor:
    """s_l for every layer, for the mean loss over all probe samples.

    Micro-batches hold different examples, so their activation gradients are disjoint pieces of one
    gradient: squared norms add up once each micro-batch loss is weighted by its share of samples.
    """
    batches = list(batches)
    total = sum(len(b["input_ids"]) for b in batches)
    indices = range(len(hooks.layers))
    squares = torch.zeros(len(hooks.layers), dtype=torch.float64)
    for batch in batches:
        share = len(batch["input_ids"]) / total
        grads, _ = attention_output_grads(hooks, indices, lambda: loss_fn(batch) * share)
        squares += torch.stack([grads[i].double().pow(2).sum().cpu() for i in indices])
    return squares.sqrt()


def layer_probabilities(norms: torch.Tensor, temperature: float = 1.0, exclude: Iterable[int] = ()) -> torch.Tensor:
    """p_l = s_l / sum(s) (the paper's rule) at temperature 1 with nothing excluded. The two
    non-paper options: s_l^(1/T) flattens (T>1) or sharpens (T<1) the distribution; excluded
    layers get probability 0 and the rest is renormalised."""
    weights = norms.double().clamp_min(0) ** (1.0 / temperature)
    allowed = torch.ones_like(weights, dtype=torch.bool)
    allowed[list(exclude)] = False
    weights = torch.where(allowed, weights, torch.zeros_like(weights))
    if weights.sum() <= 0:
        return allowed.double() / allowed.sum()
    return weights / weights.sum()


class LayerSampler:
    """Draws S distinct layers with probabilities p; owns its generator so draws are reproducible
    and identical on every rank that starts from the same seed."""

    def __init__(self, num_layers: int, layers_per_draw: int, seed: int, exclude: Iterable[int] = ()):
        self.num_layers = num_layers
        self.layers_per_draw = layers_per_draw
        self.generator = torch.Generator().manual_seed(seed)
        self.allowed = torch.ones(num_layers, dtype=torch.float64)
        self.allowed[list(exclude)] = 0.0
        self.probabilities = self.allowed / self.allowed.sum()
        self.selected: list[int] = []

    def draw(self) -> list[int]:
        nonzero = int((self.probabilities > 0).sum())
        if nonzero < self.layers_per_draw:  # too few layers with any harmful gradient: fill uniformly
            probs = self.probabilities + 1e-12 * self.allowed
        else:
            probs = self.probabilities
        picks = torch.multinomial(probs, self.layers_per_draw, replacement=False, generator=self.generator)
        self.selected = sorted(picks.tolist())
        return self.selected

    def state_dict(self) -> dict:
        return {"probabilities": self.probabilities.tolist(), "selected": self.selected,
                "generator": self.generator.get_state().tolist()}

    def load_state_dict(self, state: dict) -> None:
        self.probabilities = torch.tensor(state["probabilities"], dtype=torch.float64)
        self.selected = list(state["selected"])
        self.generator.set_state(torch.tensor(state["generator"], dtype=torch.uint8))


class ProbeStream:
    """Which harmful samples each probe reads: the pool (the first ``pool`` samples) in a fresh
    random order every epoch, a few samples per probe, so that successive probes see different
    samples (the reference's RandomSampler iterator does the same at batch size 1)."""

    def __init__(self, pool: int, seed: int):
        self.pool = pool
        self.generator = torch.Generator().manual_seed(seed)
        self.order: list[int] = []

    def next(self, count: int) -> list[int]:
        count = min(count, self.pool)
        if len(self.order) < count:  # a probe never reads one sample twice
            self.order = torch.randperm(self.pool, generator=self.generator).tolist()
        picked, self.order = self.order[:count], self.order[count:]
        return picked

    def state_dict(self) -> dict:
        return {"order": self.order, "generator": self.generator.get_state().tolist()}

    def load_state_dict(self, state: dict) -> None:
        self.order = list(state["order"])
        self.generator.set_state(torch.tensor(state["generator"], dtype=torch.uint8))
