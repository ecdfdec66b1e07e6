"""Vaccine (Huang et al., NeurIPS 2024): perturbation-aware alignment.

Pass 1 finds, for the current batch, the norm-bounded perturbation of the attention outputs that
increases the alignment loss most; pass 2 trains the model to stay aligned under it. The
optimizer step uses pass-2 gradients only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from tvaccine.methods.base import AlignmentConfig, AlignmentTrainer, require
from tvaccine.models import find_decoder_layers
from tvaccine.perturbation import AttentionHooks, attention_output_grads, worst_case_perturbation


@dataclass
class VaccineConfig(AlignmentConfig):
    rho: float = field(default=2.0, metadata={"help": "Perturbation budget: the global L2 norm of e over all "
                                                       "perturbed layers (Vaccine paper default 2)."})
    perturbation_interval: int = field(default=1, metadata={
        "help": "Accelerated Vaccine's tau: search a new perturbation only every tau micro-batches and reuse "
                "it in between (cropped or zero-padded to each batch's length)."})

    def __post_init__(self):
        super().__post_init__()
        require(self.rho >= 0, f"rho must be >= 0, got {self.rho}")
        require(self.perturbation_interval >= 1, f"perturbation interval tau must be >= 1, got "
                                                 f"{self.perturbation_interval}")


class VaccineTrainer(AlignmentTrainer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.hooks = AttentionHooks(find_decoder_layers(self.model))
        self._perturbation = None
        self._micro_batches = 0

    def perturbed_layers(self) -> list[int]:
        """Vaccine perturbs every decoder layer; T-Vaccine narrows this."""
        return list(range(len(self.hooks.layers)))

    def _reuse_perturbation(self) -> bool:
        """Decided by the micro-batch counter alone, so every rank decides the same way."""
        return self._perturbation is not None and self._micro_batches % self.args.perturbation_interval != 0 \
            and set(self._perturbation) == set(self.perturbed_layers())

    def _fitted_perturbation(self, inputs) -> dict:
        """A reused perturbation cropped or zero-padded to this batch's size and length."""
        batch, length = inputs["input_ids"].shape[:2]
        fitted = {}
        for index, delta in self._perturbation.items():
            out = delta.new_zeros((batch, length, *delta.shape[2:]))
            b, t = min(batch, delta.shape[0]), min(length, delta.shape[1])
            out[:b, :t] = delta[:b, :t]
            fitted[index] = out
        return fitted

    def search_perturbation(self, model, inputs, num_items_in_batch=None) -> None:
        model.train()
        inputs = self._prepare_inputs(inputs)
        # Pass 1 needs no gradient all-reduce under DDP; only activation gradients are computed.
        with self.accelerator.no_sync(model):
            grads, _ = attention_output_grads(
                self.hooks, self.perturbed_layers(),
                lambda: self.compute_loss(model, inputs, num_items_in_batch=num_items_in_batch))
        self._perturbation, norm = worst_case_perturbation(grads, self.args.rho)
        if not torch.isfinite(norm):
            raise FloatingPointError(f"the attention-output gradient norm became {norm.item()} at step "
                                     f"{self.state.global_step}; checkpoints so far are kept in {self.args.output_dir}")
        self.record_metric("grad_norm_h", norm.item())

    def method_state(self) -> dict:
        # A reused (tau > 1) perturbation is not saved: after a resume the next step searches anew.
        return {"micro_batches": self._micro_batches}

    def load_method_state(self, state: dict) -> None:
        self._micro_batches = state.get("micro_batches", 0)

    def training_step(self, model, inputs, num_items_in_batch=None):
        if self._reuse_perturbation():
            perturbation = self._fitted_perturbation(inputs)
        else:
            self.search_perturbation(model, inputs, num_items_in_batch)
            perturbation = self._perturbation
        self._micro_batches += 1
        with self.hooks.perturb(perturbation):
            return super().training_step(model, inputs, num_items_in_batch)
