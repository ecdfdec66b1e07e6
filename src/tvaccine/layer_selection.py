"""Which decoder layers are safety-critical, and which ones T-Vaccine trains next.

The probe measures s_l = ||dL_harm/dh_l||, the gradient norm of the loss on harmful data
(harmful prompt + compliant answer) with respect to each layer's attention output, and turns it
into sampling probabilities p_l = s_l / sum(s). Layers with a large harmful gradient are the ones
harmful fine-tuning moves most, so they are the ones worth vaccinating.

``CheckpointPlanner`` then decides which of the layers not drawn run under activation checkpointing
when ``checkpoint_unselected`` is ``auto``: as few as a memory budget allows, since each one is
recomputed in the backward of both passes.
"""

from __future__ import annotations

import contextlib
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

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


# --------------------------------------------------------------------------------------------
# Which unselected layers run checkpointed: ``checkpoint_unselected: auto``
# --------------------------------------------------------------------------------------------

@dataclass
class LayerMode:
    """What one decoder layer does in pass 2 of a draw: whether its attention / other LoRA trains,
    whether its input carries a gradient (something below trains), and whether it must stay
    uncheckpointed (a drawn layer, or the reference scope's neighbour of one)."""

    attention: bool
    other: bool
    input_grad: bool
    fixed: bool

    @property
    def in_graph(self) -> bool:
        return self.attention or self.other or self.input_grad

    def key(self, index: int) -> tuple:
        return index, self.attention, self.other, self.input_grad


@dataclass
class CheckpointPlan:
    checkpointed: list[int]
    estimated_peak_bytes: int
    budget_bytes: int
    fits: bool
    tokens: int


class CheckpointPlanner:
    """The fewest checkpointed unselected layers that keep a step's peak memory inside a budget.

    The estimate is ``base + tokens * (head + layers)``:
    - ``layers``, per token, from each layer's own activations, measured by replaying that layer
      alone on a zero hidden state of the batch's shape, in the layer's pass-2 mode, and counting
      the bytes autograd saves (``saved_tensors_hooks``; parameters and shared inputs left out). A
      checkpointed layer keeps only its input, and replays its whole activations in the backward,
      when every layer above it has been freed: the peak is the larger of the end of the forward and
      the worst such replay.
    - ``base`` (memory held before the step) and ``head`` (the embeddings, logits, loss, perturbation
      and gradients, per token) from the measured peak of the first step, which runs with every
      unselected layer checkpointed. A later step whose measured peak exceeds its estimate raises
      ``head`` by the difference, so the estimate errs on the high side.
    Activations are taken as proportional to the batch's token count (true of the layers' linear
    parts; attention that stores a length x length matrix grows faster, which the correction catches).
    """

    def __init__(self, num_layers: int, attention_params: dict[int, list], other_params: dict[int, list],
                 budget_bytes: int):
        self.num_layers = num_layers
        self.attention_params, self.other_params = attention_params, other_params
        self.budget_bytes = int(budget_bytes)
        self.inputs: dict[int, tuple] = {}  # layer index -> (hidden shape, dtype, device, args, kwargs)
        self.tokens = None  # of the batch the inputs were recorded on
        self.full: dict[tuple, float] = {}  # LayerMode.key -> saved bytes per token, uncheckpointed
        self.hidden: dict[int, float] = {}  # layer index -> bytes per token of its input hidden state
        self.base_bytes: int | None = None
        self.head_per_token = 0.0

    @property
    def calibrated(self) -> bool:
        return self.base_bytes is not None

    @contextmanager
    def record_inputs(self, layers, tokens: int) -> Iterator[None]:
        """Keep each layer's call arguments of this forward (the hidden state as a shape only)."""
        def hook_for(index):
            def hook(module, args, kwargs):
                if index in self.inputs:
                    return
                hidden, rest = (args[0], args[1:]) if args else (kwargs["hidden_states"], ())
                kwargs = {k: v for k, v in kwargs.items() if k != "hidden_states"}
                self.inputs[index] = (hidden.shape, hidden.dtype, hidden.device, rest, kwargs)
                self.hidden[index] = hidden.numel() * hidden.element_size() / tokens
            return hook

        self.inputs, self.tokens = {}, tokens
        handles = [layer.layer.register_forward_pre_hook(hook_for(layer.index), with_kwargs=True)
                   for layer in layers]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def measure(self, layers, modes: dict[int, LayerMode], context=contextlib.nullcontext) -> None:
        """The saved bytes of every layer in its mode that are not known yet; ``context``: the step's
        autocast, so that the replay saves what the step saves."""
        for index, mode in modes.items():
            key = mode.key(index)
            if key in self.full:
                continue
            if not mode.in_graph:
                self.full[key] = 0.0
                continue
            with context():
                self.full[key] = self._replay(layers[index].layer, index, mode) / self.tokens

    def _replay(self, module, index: int, mode: LayerMode) -> int:
        shape, dtype, device, args, kwargs = self.inputs[index]
        ignore = {t.untyped_storage().data_ptr() for t in (*module.parameters(), *module.buffers())}
        ignore |= {t.untyped_storage().data_ptr() for t in _tensors((args, kwargs))}
        saved: dict[int, int] = {}

        def pack(tensor):
            storage = tensor.untyped_storage()
            if storage.data_ptr() not in ignore:
                saved[storage.data_ptr()] = storage.nbytes()
            return tensor

        params = [(p, p.requires_grad) for p in module.parameters()]
        for p in self.attention_params[index]:
            p.requires_grad_(mode.attention)
        for p in self.other_params[index]:
            p.requires_grad_(mode.other)
        checkpointing = getattr(module, "gradient_checkpointing", None)
        devices = [device] if device.type == "cuda" else []
        try:
            if checkpointing is not None:
                module.gradient_checkpointing = False
            # The replay must not move the dropout random stream of the run.
            with torch.random.fork_rng(devices=devices), torch.enable_grad(), \
                    torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
                hidden = torch.zeros(shape, dtype=dtype, device=device, requires_grad=mode.input_grad)
                output = module(hidden, *args, **kwargs)
            del output
        finally:
            if checkpointing is not None:
                module.gradient_checkpointing = checkpointing
            for p, flag in params:
                p.requires_grad_(flag)
        return sum(saved.values())

    def layers_per_token(self, modes: dict[int, LayerMode], checkpointed: set[int]) -> float:
        """Activation bytes per token at the step's peak, for a set of checkpointed layers."""
        held, peak = 0.0, 0.0
        for index in range(self.num_layers):
            mode = modes[index]
            if not mode.in_graph:
                continue
            full = self.full[mode.key(index)]
            if index in checkpointed:
                peak = max(peak, held + full)  # its replay in the backward, everything above freed
                held += self.hidden[index]
            else:
                held += full
        return max(peak, held)

    def estimate(self, modes: dict[int, LayerMode], checkpointed: set[int], tokens: int) -> int:
        return int(self.base_bytes + tokens * (self.head_per_token + self.layers_per_token(modes, checkpointed)))

    def calibrate(self, modes: dict[int, LayerMode], checkpointed: set[int], tokens: int, base_bytes: int,
                  peak_bytes: int) -> None:
        """``base`` and ``head`` from a measured step (run with ``checkpointed``)."""
        self.base_bytes = int(base_bytes)
        layers = tokens * self.layers_per_token(modes, checkpointed)
        self.head_per_token = max(0.0, peak_bytes - base_bytes - layers) / tokens

    def correct(self, estimated: int, measured: int, tokens: int) -> bool:
        """Raise ``head`` when a step's measured peak exceeded its estimate; True when it did."""
        if measured <= estimated:
            return False
        self.head_per_token += (measured - estimated) / tokens
        return True

    def plan(self, modes: dict[int, LayerMode], tokens: int) -> CheckpointPlan:
        """Checkpoint the candidates that save most first, as few as fit; all of them when none fit."""
        candidates = [i for i, m in modes.items() if m.in_graph and not m.fixed]
        candidates.sort(key=lambda i: (-(self.full[modes[i].key(i)] - self.hidden[i]), i))
        checkpointed: set[int] = set()
        estimate = self.estimate(modes, checkpointed, tokens)
        for index in candidates:
            if estimate <= self.budget_bytes:
                break
            checkpointed.add(index)
            estimate = self.estimate(modes, checkpointed, tokens)
        # Layers outside the graph record nothing either way: checkpoint them as `true` does.
        idle = {i for i, m in modes.items() if not m.in_graph and not m.fixed}
        return CheckpointPlan(sorted(checkpointed | idle), estimate, self.budget_bytes,
                              estimate <= self.budget_bytes, tokens)


def _tensors(tree):
    if isinstance(tree, torch.Tensor):
        yield tree
    elif isinstance(tree, (tuple, list)):
        for item in tree:
            yield from _tensors(item)
    elif isinstance(tree, dict):
        for item in tree.values():
            yield from _tensors(item)
