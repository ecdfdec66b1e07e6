"""Plain supervised alignment: the baseline every defense is compared against."""

from dataclasses import dataclass

from tvaccine.methods.base import AlignmentConfig, AlignmentTrainer


@dataclass
class SFTConfig(AlignmentConfig):
    """No extra knobs: one forward/backward and one optimizer step per batch."""


class SFTTrainer(AlignmentTrainer):
    """The stock Trainer step; exists so every method is selected and measured the same way."""
