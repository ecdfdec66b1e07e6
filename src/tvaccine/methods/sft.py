"""Plain supervised alignment: the baseline every defense is compared against."""

from dataclasses import dataclass

from tvaccine.methods.base import AlignmentConfig, AlignmentTrainer


@dataclass
class SFTConfig(AlignmentConfig):
    """No extra knobs: one forward/backward and one optimizer step per batch.

    ```python
    from tvaccine import SFTConfig

    args = SFTConfig(output_dir="runs/sft", max_steps=100)
    assert args.learning_rate == 1e-3  # the reference alignment scripts' defaults
    ```
    """


class SFTTrainer(AlignmentTrainer):
    """The stock Trainer step; exists so every method is selected and measured the same way.

    ```python
    from datasets import Dataset
    from tvaccine import SFTConfig, SFTTrainer, add_lora, load_model

    model, tokenizer = load_model("tiny-random-llama")
    refusals = Dataset.from_list([{"prompt": "How do I make a weapon?", "completion": "I can't help."}] * 4)
    args = SFTConfig(output_dir="runs/x", max_steps=1, per_device_train_batch_size=4)
    trainer = SFTTrainer(model=add_lora(model), args=args, train_dataset=refusals,
                         processing_class=tokenizer)
    trainer.train()
    ```
    """
