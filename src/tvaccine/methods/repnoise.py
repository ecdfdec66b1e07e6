"""RepNoise (Rosati et al., 2024, arXiv 2405.14577): representation noising.

Next to the usual alignment loss on refusals, harmful inputs (prompt + compliant answer) get two
terms: a bounded ascent on their language-modelling loss, and an MMD term that pulls their hidden
representations, at every layer, towards Gaussian noise. A later attacker then finds no harmful
information left in the representations to build on.

Written from the paper's equations. Choices made here: the ascent term is -log(1 - exp(-L_harm)),
which pushes L_harm up but flattens out once the harmful answer is unlikely (an unbounded -L_harm
would diverge); the MMD uses a Gaussian kernel at three bandwidths around the median distance, on
at most ``mmd_tokens`` randomly chosen token positions per layer; harmful samples are paired with
the alignment data at the data-set level (the compliant answers to the alignment prompts).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from tvaccine.methods.base import AlignmentConfig, AlignmentTrainer, require


@dataclass
class RepNoiseConfig(AlignmentConfig):
    """RepNoise's weights: alpha (the bounded harmful-loss ascent) and beta (the MMD-to-noise term).

    ```python
    from tvaccine import RepNoiseConfig

    args = RepNoiseConfig(output_dir="runs/repnoise", alpha=0.1, beta=0.001)
    ```
    """

    alpha: float = field(default=0.1, metadata={"help": "Weight of the bounded ascent on the harmful loss "
                                                         "(0.1 in the T-Vaccine comparison)."})
    beta: float = field(default=0.001, metadata={"help": "Weight of the MMD-to-noise term (0.001 there)."})
    mmd_tokens: int = field(default=128, metadata={"help": "Token positions per layer in the MMD estimate."})

    def __post_init__(self):
        super().__post_init__()
        require(self.alpha >= 0 and self.beta >= 0, "RepNoise alpha and beta must be >= 0")
        require(self.mmd_tokens >= 2, "mmd_tokens must be >= 2")


def bounded_ascent(harmful_loss: torch.Tensor) -> torch.Tensor:
    """Decreases as the harmful loss grows, and tends to 0 instead of -infinity."""
    return -torch.log(torch.clamp(1 - torch.exp(-harmful_loss), min=1e-6))


def mmd_to_noise(samples: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Squared MMD between ``samples`` (n x d) and as many draws of N(0, I), Gaussian kernels."""
    samples = samples.float()
    noise = torch.randn(samples.shape, generator=generator).to(samples.device)
    both = torch.cat([samples, noise])
    distances = torch.cdist(both, both).pow(2)
    median = distances.detach()[distances.detach() > 0].median().clamp_min(1e-6)
    kernel = sum(torch.exp(-distances / (scale * median)) for scale in (0.5, 1.0, 2.0))
    n = len(samples)
    return kernel[:n, :n].mean() + kernel[n:, n:].mean() - 2 * kernel[:n, n:].mean()


class RepNoiseTrainer(AlignmentTrainer):
    """Reads a batch of ``harmful_dataset`` (compliant answers to harmful prompts) next to each
    alignment batch, for the ascent and the noise terms.

    ```python
    from datasets import Dataset
    from tvaccine import RepNoiseConfig, RepNoiseTrainer, add_lora, load_model

    model, tokenizer = load_model("tiny-random-llama")
    refusals = Dataset.from_list([{"prompt": "How do I make a weapon?", "completion": "I can't help."}] * 4)
    harmful = Dataset.from_list([{"prompt": "How do I make a weapon?", "completion": "Sure, here is how."}] * 4)
    args = RepNoiseConfig(output_dir="runs/x", max_steps=1, per_device_train_batch_size=4)
    trainer = RepNoiseTrainer(model=add_lora(model), args=args, train_dataset=refusals, harmful_dataset=harmful,
                              processing_class=tokenizer)
    trainer.train()
    ```
    """

    harmful_data = "paired"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._generator = torch.Generator().manual_seed(self.args.seed)

    def noise_term(self, hidden_states, attention_mask) -> torch.Tensor:
        """Mean over decoder layers of the MMD between harmful token representations and noise."""
        mask = attention_mask.bool()
        terms = []
        for layer_states in hidden_states[1:]:  # [0] is the embedding output
            tokens = layer_states[mask]
            keep = torch.randperm(len(tokens), generator=self._generator)[:self.args.mmd_tokens]
            terms.append(mmd_to_noise(tokens[keep.to(tokens.device)], self._generator))
        return torch.stack(terms).mean()

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        harmless = super().compute_loss(model, inputs, num_items_in_batch=num_items_in_batch)
        harmful = self._prepare_inputs(next(self.harmful_batches))
        outputs = model(**harmful, output_hidden_states=True)
        ascent = bounded_ascent(outputs.loss)
        noise = self.noise_term(outputs.hidden_states, harmful["attention_mask"])
        self.record_metric("harmful_loss", outputs.loss.item())
        self.record_metric("mmd_to_noise", noise.item())
        extra = (self.args.alpha * ascent + self.args.beta * noise) * self.accumulation_share(num_items_in_batch)
        loss = harmless + extra
        return (loss, None) if return_outputs else loss
