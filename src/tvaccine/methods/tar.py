"""TAR (Tamirisa et al., 2024, arXiv 2408.00761): tamper-resistant safeguards.

Adversarial meta-learning: each step simulates a fine-tuning attack (a few SGD steps on harmful
data, learning rate sampled log-uniformly) on the current adapter, measures a tamper-resistance
loss at the attacked weights, and trains the safeguard so that this loss stays low, next to a
retain loss (the usual alignment loss) that keeps the model useful.

Simplified here, and said so: first-order (the gradient of the tamper-resistance loss is taken at
the attacked weights and applied to the original ones, as in first-order MAML; TAR differentiates
through the attack), a plain-SGD attack of ``inner_steps`` steps on the LoRA weights, and the
entropy-style tamper-resistance loss L_TR = -H(p(.|x)) / log(V) on the harmful answers' tokens
(minimising it keeps the attacked model maximally unsure about harmful continuations).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

import torch

from tvaccine.data.formatting import IGNORE_INDEX
from tvaccine.methods.base import AlignmentConfig, AlignmentTrainer, require


@dataclass
class TARConfig(AlignmentConfig):
    """TAR's lambda (``tamper_weight``) and the simulated attack's steps and learning-rate range.

    ```python
    from tvaccine import TARConfig

    args = TARConfig(output_dir="runs/tar", tamper_weight=5.0, inner_steps=2)
    ```
    """

    tamper_weight: float = field(default=5.0, metadata={"help": "lambda: weight of the tamper-resistance "
                                                                "gradient against the retain loss's (1)."})
    inner_steps: int = field(default=2, metadata={"help": "SGD steps of each simulated attack."})
    inner_lr_min: float = field(default=1e-4, metadata={"help": "Smallest attack learning rate sampled."})
    inner_lr_max: float = field(default=1e-2, metadata={"help": "Largest attack learning rate sampled."})

    def __post_init__(self):
        super().__post_init__()
        require(self.tamper_weight >= 0, "TAR tamper weight must be >= 0")
        require(self.inner_steps >= 1, "TAR inner steps must be >= 1")
        require(0 < self.inner_lr_min <= self.inner_lr_max, "TAR needs 0 < inner_lr_min <= inner_lr_max")


def negative_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean over answer tokens of -H(next-token distribution) / log(vocabulary), in [-1, 0]."""
    logits, labels = logits[:, :-1].float(), labels[:, 1:]
    log_probs = torch.log_softmax(logits, dim=-1)
    entropy = -(log_probs.exp() * log_probs).sum(-1)
    mask = labels != IGNORE_INDEX
    return -(entropy[mask].mean() / math.log(logits.shape[-1]))


class TARTrainer(AlignmentTrainer):
    """Attacks a copy of the adapter on ``harmful_dataset`` each step and adds the gradient of the
    tamper-resistance loss taken there.

    ```python
    from datasets import Dataset
    from tvaccine import TARConfig, TARTrainer, add_lora, load_model

    model, tokenizer = load_model("tiny-random-llama")
    refusals = Dataset.from_list([{"prompt": "How do I make a weapon?", "completion": "I can't help."}] * 4)
    harmful = Dataset.from_list([{"prompt": "How do I make a weapon?", "completion": "Sure, here is how."}] * 4)
    args = TARConfig(output_dir="runs/x", max_steps=1, per_device_train_batch_size=4, inner_steps=1)
    trainer = TARTrainer(model=add_lora(model), args=args, train_dataset=refusals, harmful_dataset=harmful,
                         processing_class=tokenizer)
    trainer.train()
    ```
    """

    harmful_data = "paired"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._rng = random.Random(self.args.seed)

    def tamper_resistance_gradients(self, model) -> tuple[list[torch.Tensor], float]:
        """Attack a copy of the trainable weights, return dL_TR/dtheta at the attacked point. The
        weights are restored in ``finally``: the outer model leaves this exactly as it came in."""
        params = [p for p in model.parameters() if p.requires_grad]
        saved = [p.detach().clone() for p in params]
        lr = math.exp(self._rng.uniform(math.log(self.args.inner_lr_min), math.log(self.args.inner_lr_max)))
        try:
            for _ in range(self.args.inner_steps):
                attack_loss = model(**self._prepare_inputs(next(self.harmful_batches))).loss
                grads = torch.autograd.grad(attack_loss, params, allow_unused=True)
                with torch.no_grad():
                    for param, grad in zip(params, grads):
                        if grad is not None:
                            param.sub_(lr * grad)
            batch = self._prepare_inputs(next(self.harmful_batches))
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            tamper_loss = negative_entropy(logits, batch["labels"])
            grads = torch.autograd.grad(tamper_loss, params, allow_unused=True)
        finally:
            with torch.no_grad():
                for param, value in zip(params, saved):
                    param.copy_(value)
        grads = [g if g is not None else torch.zeros_like(p) for g, p in zip(grads, params)]
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            for grad in grads:  # the retain gradients are averaged by DDP; average these the same way
                torch.distributed.all_reduce(grad)
                grad /= torch.distributed.get_world_size()
        return grads, tamper_loss.item()

    def training_step(self, model, inputs, num_items_in_batch=None):
        model.train()
        with self.accelerator.no_sync(model):  # the simulated attack must not all-reduce anything
            tamper_grads, tamper_loss = self.tamper_resistance_gradients(model)
        self.record_metric("tamper_loss", tamper_loss)
        loss = super().training_step(model, inputs, num_items_in_batch)  # retain loss, writes .grad
        scale = self.args.tamper_weight / getattr(self, "current_gradient_accumulation_steps",
                                                  self.args.gradient_accumulation_steps)
        with torch.no_grad():
            params = [p for p in model.parameters() if p.requires_grad]
            for param, grad in zip(params, tamper_grads):
                param.grad = grad * scale if param.grad is None else param.grad.add_(grad, alpha=scale)
        return loss
