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

# Accelerated Vaccine (the Vaccine paper's appendix) is in neither reference repository
# (git-disl/Vaccine trainer.py VaccineTrainer.training_step searches every step), so its
# in-between steps follow the paper as we read it; the reuse variant is kept as a named option.
BETWEEN_SEARCHES = ("sft", "reuse")


@dataclass
class VaccineConfig(AlignmentConfig):
    """Vaccine's budget rho, and Accelerated Vaccine's tau (``perturbation_interval``).

    ```python
    from tvaccine import VaccineConfig

    args = VaccineConfig(output_dir="runs/vaccine", rho=2.0, perturbation_interval=10)  # Accelerated Vaccine
    ```
    """

    rho: float = field(default=2.0, metadata={"help": "Perturbation budget: the global L2 norm of e over all "
                                                       "perturbed layers (Vaccine paper default 2)."})
    perturbation_interval: int = field(default=1, metadata={
        "help": "Accelerated Vaccine's tau: search a new perturbation only on every tau-th optimizer step. "
                "1 = plain Vaccine (the only mode in the authors' code)."})
    between_searches: str = field(default="sft", metadata={
        "help": "What the steps between two searches do when tau > 1: 'sft' (plain steps, our reading of the "
                "paper's Algorithm 2) or 'reuse' (re-apply the last perturbation, cropped or zero-padded to "
                "the batch: a non-paper variant)."})

    def __post_init__(self):
        super().__post_init__()
        require(self.rho >= 0, f"rho must be >= 0, got {self.rho}")
        require(self.perturbation_interval >= 1, f"perturbation interval tau must be >= 1, got "
                                                 f"{self.perturbation_interval}")
        require(self.between_searches in BETWEEN_SEARCHES, f"between_searches must be one of "
                f"{', '.join(BETWEEN_SEARCHES)}, got {self.between_searches!r}")


class VaccineTrainer(AlignmentTrainer):
    """Each step finds the worst-case perturbation of every attention output (pass 1), then trains
    under it (pass 2), so the alignment survives the drift a later fine-tuning causes.

    ```python
    from datasets import Dataset
    from tvaccine import VaccineConfig, VaccineTrainer, add_lora, load_model

    model, tokenizer = load_model("tiny-random-llama")
    refusals = Dataset.from_list([{"prompt": "How do I make a weapon?", "completion": "I can't help."}] * 4)
    args = VaccineConfig(output_dir="runs/x", max_steps=1, per_device_train_batch_size=4, rho=2.0)
    trainer = VaccineTrainer(model=add_lora(model), args=args, train_dataset=refusals,
                             processing_class=tokenizer)
    trainer.train()
    ```
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.hooks = AttentionHooks(find_decoder_layers(self.model))
        self._perturbation = None

    def perturbed_layers(self) -> list[int]:
        """Vaccine perturbs every decoder layer; T-Vaccine narrows this."""
        return list(range(len(self.hooks.layers)))

    def _step_mode(self) -> str:
        """'search', 'reuse' or 'plain', decided by the optimizer step alone, so that every rank and
        every micro-batch of a step agree. A perturbation is not checkpointed: after a resume, or
        when T-Vaccine has drawn other layers, 'reuse' searches anew."""
        if self.state.global_step % self.args.perturbation_interval == 0:
            return "search"
        if self.args.between_searches == "sft":
            return "plain"
        reusable = self._perturbation is not None and set(self._perturbation) == set(self.perturbed_layers())
        return "reuse" if reusable else "search"

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
            grads, _ = attention_output_grads(self.hooks, self.perturbed_layers(),
                                              lambda: self._loss(model, inputs, num_items_in_batch))
        self._perturbation, norm = worst_case_perturbation(grads, self.args.rho)
        if not torch.isfinite(norm):
            raise FloatingPointError(f"the attention-output gradient norm became {norm.item()} at step "
                                     f"{self.state.global_step}; checkpoints so far are kept in {self.args.output_dir}")
        self.record_metric("grad_norm_h", norm.item())

    def training_step(self, model, inputs, num_items_in_batch=None):
        mode = self._step_mode()
        if mode == "plain":  # an Accelerated Vaccine step between two searches
            return super().training_step(model, inputs, num_items_in_batch)
        if mode == "search":
            self.search_perturbation(model, inputs, num_items_in_batch)
        perturbation = self._perturbation if mode == "search" else self._fitted_perturbation(inputs)
        with self.hooks.perturb(perturbation):
            return super().training_step(model, inputs, num_items_in_batch)
