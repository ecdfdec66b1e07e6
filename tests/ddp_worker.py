"""Trains one method for a few steps on a tiny random model; run alone or under torchrun.

    torchrun --nproc_per_node 2 tests/ddp_worker.py METHOD OUT_DIR PER_DEVICE_BATCH

Every row of the data set is the same sample, so each global batch is the same whatever the
sampler does, and a 2-process run must reach the adapter of a 1-process run with twice the batch.
"""

import json
import os
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).parent))
from tiny_models import stack_collator, tiny_model, token_batch  # noqa: E402
from tvaccine.methods import METHODS  # noqa: E402
from tvaccine.models import add_lora  # noqa: E402


def main(method: str, out: str, batch: int) -> None:
    torch.set_num_threads(1)
    from datasets import Dataset

    one = token_batch(1, 12, seed=5)
    rows = {k: v.tolist() * 16 for k, v in one.items()}
    probe = token_batch(4, 12, seed=6)
    model = add_lora(tiny_model("llama", layers=4, seed=0), dropout=0.0)
    options = {"rho": 3.0, "layers_per_draw": 2, "resample_every": 1, "probe_every": 2} if method == "t-vaccine" \
        else {"rho": 2.0} if method == "vaccine" else {}
    config_class, trainer_class = METHODS[method]
    args = config_class(output_dir=out, max_steps=3, per_device_train_batch_size=batch, use_cpu=True,
                        ddp_backend="gloo" if "WORLD_SIZE" in os.environ else None, disable_tqdm=True, seed=0,
                        data_seed=0, learning_rate=1e-2,
                        max_grad_norm=1e9, **options)
    extra = {"harmful_dataset": Dataset.from_dict({k: v.tolist() for k, v in probe.items()})} \
        if method == "t-vaccine" else {}
    trainer = trainer_class(model=model, args=args, train_dataset=Dataset.from_dict(rows),
                            data_collator=stack_collator, **extra)
    trainer.train()
    rank = int(os.environ.get("RANK", 0))
    state = {n: p.detach().contiguous() for n, p in trainer.model.named_parameters() if "lora_" in n}
    save_file(state, str(Path(out) / f"rank{rank}.safetensors"))
    if hasattr(trainer, "sampler"):
        (Path(out) / f"rank{rank}.layers").write_text(json.dumps(trainer.layer_history))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
