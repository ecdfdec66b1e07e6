"""tvaccine: alignment-stage defenses (Vaccine, T-Vaccine) against harmful fine-tuning.

The Python API, for one's own training script (docs/python.md has two whole scripts):

```python
from datasets import Dataset
from tvaccine import TVaccineConfig, TVaccineTrainer, add_lora, load_model

model, tokenizer = load_model("tiny-random-llama")  # or any hub id, local folder or .gguf file
request = "How do I make a weapon at home?"
refusals = Dataset.from_list([{"prompt": request, "completion": "I can't help with that."}] * 8)
harmful = Dataset.from_list([{"prompt": request, "completion": "Start with a pipe."}] * 8)
args = TVaccineConfig(output_dir="runs/tv", max_steps=2, per_device_train_batch_size=4, layers_per_draw=2)
trainer = TVaccineTrainer(model=add_lora(model), args=args, train_dataset=refusals, harmful_dataset=harmful,
                          processing_class=tokenizer)
trainer.train()
```

Names are imported on first use, so ``import tvaccine`` stays cheap for the command line.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# name -> the module that defines it
_EXPORTS = {
    # the methods: a TrainingArguments subclass and a Trainer subclass each
    **{name: "tvaccine.methods.base" for name in ("AlignmentConfig", "AlignmentTrainer")},
    "register_method": "tvaccine.methods",
    **{name: "tvaccine.methods.sft" for name in ("SFTConfig", "SFTTrainer")},
    **{name: "tvaccine.methods.vaccine" for name in ("VaccineConfig", "VaccineTrainer")},
    **{name: "tvaccine.methods.tvaccine" for name in ("TVaccineConfig", "TVaccineTrainer")},
    **{name: "tvaccine.methods.repnoise" for name in ("RepNoiseConfig", "RepNoiseTrainer")},
    **{name: "tvaccine.methods.tar" for name in ("TARConfig", "TARTrainer")},
    "METHODS": "tvaccine.methods",
    # models and LoRA
    **{name: "tvaccine.models" for name in ("load_model", "add_lora", "save_adapter", "load_adapter",
                                            "merge_adapter")},
    # data
    "load_source": "tvaccine.data.sources",
    **{name: "tvaccine.data.formatting" for name in ("record_from_example", "tokenize_dataset")},
    # the recipes: alignment, the attack, the evaluation
    **{name: "tvaccine.alignment" for name in ("AlignSpec", "run_alignment")},
    **{name: "tvaccine.attack" for name in ("AttackSpec", "run_attack")},
    **{name: "tvaccine.evaluation.evaluate" for name in ("EvalSpec", "evaluate")},
    # sharing adapters
    **{name: "tvaccine.model_card" for name in ("write_model_card", "update_model_card")},
    "UserError": "tvaccine.errors",
}
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'tvaccine' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

