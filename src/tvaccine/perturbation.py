"""The one perturbation mechanism shared by Vaccine and T-Vaccine.

Vaccine's pass 1 needs dL/dh_l, the gradient of the loss with respect to the output h_l of each
perturbed layer's self-attention module; pass 2 re-runs the forward with h_l + e_l. Both are
forward hooks on the attention modules, installed for exactly one pass and removed in
``finally`` so that no hook outlives a step, even one that raises.

Pass 1 does no work its result does not use (``lean``): no parameter requires a gradient while it
runs and the graph starts at the lowest perturbed attention output, so nothing below that output,
and nothing that only a weight gradient would need, is recorded. The authors' pass 1 is a full
backward whose parameter gradients are then zeroed (Lslland/T-Vaccine trainer.py,
BaseTrainer.training_step, and git-disl/Vaccine trainer.py, VaccineTrainer.training_step: ``step()``
then ``model.zero_grad()``); only the activation gradients are kept, which is all this computes.
"""

from __future__ import annotations

import contextlib
from contextlib import contextmanager
from typing import Callable, Iterator

import torch

from tvaccine.models import DecoderLayer

NORM_EPS = 1e-7


def _first(output):
    return output[0] if isinstance(output, (tuple, list)) else output


def _replace_first(output, tensor):
    if isinstance(output, tuple):
        return (tensor, *output[1:])
    if isinstance(output, list):
        return [tensor, *output[1:]]
    return tensor


class AttentionHooks:
    """Installs per-pass forward hooks on the self-attention modules of the decoder layers."""

    def __init__(self, layers: list[DecoderLayer]):
        self.layers = layers

    @contextmanager
    def _hooked(self, indices, hook_for: Callable[[int], Callable]) -> Iterator[None]:
        handles = []
        try:
            for index in indices:
                handles.append(self.layers[index].attention.register_forward_hook(hook_for(index)))
            yield
        finally:
            for handle in handles:
                handle.remove()

    @contextmanager
    def capture(self, indices, leaf: int | None = None) -> Iterator[dict[int, torch.Tensor]]:
        """Record each attention output h_l of this pass. Only the first call per layer is kept:
        under activation checkpointing the backward replays the forward, and the replayed tensor
        is not the one in the autograd graph. ``leaf``: that layer's output is replaced by a detached
        copy that requires grad (same values), so that the graph starts there."""
        captured: dict[int, torch.Tensor] = {}

        def hook_for(index):
            def hook(module, args, output):
                if index != leaf:
                    captured.setdefault(index, _first(output))
                    return None
                start = _first(output).detach().requires_grad_(True)
                captured.setdefault(index, start)
                return _replace_first(output, start)
            return hook

        with self._hooked(indices, hook_for):
            yield captured

    @contextmanager
    def perturb(self, perturbation: dict[int, torch.Tensor]) -> Iterator[None]:
        """Add the fixed (detached) e_l to each perturbed attention output."""

        def hook_for(index):
            delta = perturbation[index]

            def hook(module, args, output):
                return _replace_first(output, _first(output) + delta.to(_first(output).dtype))
            return hook

        with self._hooked(perturbation.keys(), hook_for):
            yield

    def live_hooks(self) -> int:
        """How many hooks sit on the attention modules and the decoder layers now (0 between steps)."""
        return sum(len(layer.attention._forward_hooks) + len(layer.layer._forward_hooks)
                   + len(layer.layer._forward_pre_hooks) + ("forward" in vars(layer.layer))
                   for layer in self.layers)

    def parameters(self) -> list[torch.nn.Parameter]:
        return [p for layer in self.layers for p in layer.layer.parameters()]

    @contextmanager
    def graph_free_below_layers(self) -> Iterator[None]:
        """No parameter of the decoder layers requires grad, and the hidden state entering the first
        layer is detached (a model whose embeddings output requires grad would otherwise record the
        whole stack): only what hangs off a ``capture(leaf=...)`` output is recorded."""
        params = [p for p in self.parameters() if p.requires_grad]

        def detach_input(module, args, kwargs):
            if args and isinstance(args[0], torch.Tensor) and args[0].requires_grad:
                return (args[0].detach(), *args[1:]), kwargs
            hidden = kwargs.get("hidden_states")
            if isinstance(hidden, torch.Tensor) and hidden.requires_grad:
                return args, {**kwargs, "hidden_states": hidden.detach()}
            return None

        handle = self.layers[0].layer.register_forward_pre_hook(detach_input, with_kwargs=True)
        for param in params:
            param.requires_grad_(False)
        try:
            yield
        finally:
            handle.remove()
            for param in params:
                param.requires_grad_(True)

    @contextmanager
    def record_layer_output(self, index: int) -> Iterator[dict]:
        """The (detached) output of decoder layer ``index`` in this pass, first call only."""
        recorded: dict = {}

        def hook(module, args, output):
            recorded.setdefault("output", _detached(output))

        handle = self.layers[index].layer.register_forward_hook(hook)
        try:
            yield recorded
        finally:
            handle.remove()

    @contextmanager
    def skip_layers_below(self, index: int, output) -> Iterator[None]:
        """Layers ``0..index-1`` do not run: each returns ``output``, the recorded output of layer
        ``index - 1``, so layer ``index`` receives exactly the hidden state it received then. The
        hidden states between those layers are not reproduced, so a forward that asks for every
        hidden state must not run under this."""
        replaced = [self.layers[i].layer for i in range(index)]
        for module in replaced:
            module.forward = lambda *args, **kwargs: output
        try:
            yield
        finally:
            for module in replaced:
                vars(module).pop("forward", None)


def _detached(output):
    if isinstance(output, torch.Tensor):
        return output.detach()
    if isinstance(output, (tuple, list)):
        return type(output)(_detached(item) for item in output)
    return output


def attention_output_grads(hooks: AttentionHooks, indices, loss_fn: Callable[[], torch.Tensor], lean: bool = True):
    """dL/dh_l for the given layers, and the loss.

    ``torch.autograd.grad`` with the h_l as inputs computes only these activation gradients: no
    parameter ``.grad`` is written (so nothing has to be zeroed afterwards) and the backward stops
    at the lowest requested layer instead of running down to the embeddings. ``lean`` also keeps
    the forward from recording what that backward never reads: nothing below the lowest h_l, and
    none of the inputs that only weight gradients need (see ``graph_free_below_layers``).
    """
    indices = sorted(indices)
    with contextlib.ExitStack() as stack:
        if lean:
            stack.enter_context(hooks.graph_free_below_layers())
        captured = stack.enter_context(hooks.capture(indices, leaf=indices[0] if lean else None))
        loss = loss_fn()
        missing = [i for i in indices if i not in captured]
        if missing:
            raise RuntimeError(f"attention outputs of layers {missing} were not produced by the forward pass")
        outputs = [captured[i] for i in indices]
        if not all(out.requires_grad for out in outputs):
            from tvaccine.errors import UserError

            raise UserError("a perturbed layer's attention output carries no gradient: nothing below it is "
                            "trainable (LoRA targets must include the attention projections)")
        # Inside the stack: a checkpointed layer replays its forward during this backward, with the
        # same parameters frozen.
        grads = torch.autograd.grad(loss, outputs, allow_unused=True)
    grads = {i: (g if g is not None else torch.zeros_like(o)) for i, o, g in zip(indices, outputs, grads)}
    return grads, loss.detach()


def gradient_norm(grads: dict[int, torch.Tensor]) -> torch.Tensor:
    """ONE L2 norm over all layers, tokens and examples together (as in the Vaccine paper).

    Under data parallelism the squared norm is summed over ranks, so the norm is that of the whole
    global batch: every rank then applies the same perturbation one process would apply to that
    batch (the reference code normalised per rank instead).
    """
    squared = sum(g.float().pow(2).sum() for g in grads.values())
    if torch.distributed.is_available() and torch.distributed.is_initialized() \
            and torch.distributed.get_world_size() > 1:
        torch.distributed.all_reduce(squared)
    return torch.sqrt(squared)


def worst_case_perturbation(grads: dict[int, torch.Tensor], rho: float):
    """e_l = rho * g_l / (||g|| + eps): the steepest ascent direction inside a rho-ball."""
    norm = gradient_norm(grads)
    scale = rho / (norm + NORM_EPS)
    return {i: (g.float() * scale).to(g.dtype).detach() for i, g in grads.items()}, norm.detach()
