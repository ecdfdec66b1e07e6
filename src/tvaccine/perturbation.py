"""The one perturbation mechanism shared by Vaccine and T-Vaccine.

Vaccine's pass 1 needs dL/dh_l, the gradient of the loss with respect to the output h_l of each
perturbed layer's self-attention module; pass 2 re-runs the forward with h_l + e_l. Both are
forward hooks on the attention modules, installed for exactly one pass and removed in
``finally`` so that no hook outlives a step, even one that raises.
"""

from __future__ import annotations

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
    def capture(self, indices) -> Iterator[dict[int, torch.Tensor]]:
        """Record each attention output h_l of this pass. Only the first call per layer is kept:
        under activation checkpointing the backward replays the forward, and the replayed tensor
        is not the one in the autograd graph."""
        captured: dict[int, torch.Tensor] = {}

        def hook_for(index):
            def hook(module, args, output):
                captured.setdefault(index, _first(output))
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
        """How many forward hooks sit on the attention modules now (0 between steps)."""
        return sum(len(layer.attention._forward_hooks) for layer in self.layers)


def attention_output_grads(hooks: AttentionHooks, indices, loss_fn: Callable[[], torch.Tensor]):
    """dL/dh_l for the given layers, and the loss.

    ``torch.autograd.grad`` with the h_l as inputs computes only these activation gradients: no
    parameter ``.grad`` is written (so nothing has to be zeroed afterwards) and the backward stops
    at the lowest requested layer instead of running down to the embeddings.
    """
    indices = sorted(indices)
    with hooks.capture(indices) as captured:
        loss = loss_fn()
    missing = [i for i in indices if i not in captured]
    if missing:
        raise RuntimeError(f"attention outputs of layers {missing} were not produced by the forward pass")
    outputs = [captured[i] for i in indices]
    if not all(out.requires_grad for out in outputs):
        from tvaccine.errors import UserError

        raise UserError("a perturbed layer's attention output carries no gradient: nothing below it is trainable "
                        "(LoRA targets must include the attention projections)")
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
