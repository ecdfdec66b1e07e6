"""Peak memory and step time of SFT, Vaccine and T-Vaccine on the same model, batch and length.

    python benchmarks/step_cost.py                       # default model, batch 8 x 128 tokens, CPU
    python benchmarks/step_cost.py --model <hub id or dir> --batch 10 --seq-len 200   # on a GPU

Each method runs in its own process, so each peak is that method's own: CUDA peak allocated on a
GPU; on CPU the peak resident set size, reported whole and above the RSS of the loaded model.
Every method trains on the same fixed batch (the same token ids at every step); the first step
(set-up, T-Vaccine's probe) is excluded from the mean step time.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from pathlib import Path


def measure(method: str, args: dict, queue) -> None:
    import torch
    from datasets import Dataset

    from tvaccine.methods import METHODS
    from tvaccine.methods.base import peak_memory_bytes
    from tvaccine.models import add_lora, find_decoder_layers, load_model

    torch.manual_seed(0)
    device = "cpu" if args["cpu"] else None
    model, _ = load_model(args["model"], dtype=args["dtype"], device=device)
    model.config.use_cache = False
    layers = len(find_decoder_layers(model))
    model = add_lora(model, dropout=0.0)
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(10, model.config.vocab_size, (args["batch"], args["seq_len"]), generator=generator)
    rows = {"input_ids": ids.tolist() * args["steps"], "attention_mask": [[1] * args["seq_len"]] * len(ids) * args["steps"],
            "labels": ids.tolist() * args["steps"]}
    dataset = Dataset.from_dict(rows)
    on_gpu = torch.cuda.is_available() and not args["cpu"]
    if on_gpu:
        torch.cuda.reset_peak_memory_stats()
    loaded = peak_memory_bytes(torch.device("cuda" if on_gpu else "cpu"))
    options = {}
    if method == "vaccine":
        options = {"rho": 2.0}
    if method == "t-vaccine":
        options = {"rho": 3.0, "layers_per_draw": max(1, round(layers / 4)), "resample_every": 10**6,
                   "probe_every": 10**6, "probe_samples": args["batch"]}
    config_class, trainer_class = METHODS[method]
    config = config_class(output_dir="/tmp/tvaccine-bench", max_steps=args["steps"],
                          per_device_train_batch_size=args["batch"], disable_tqdm=True, use_cpu=args["cpu"],
                          logging_steps=10**6, seed=0, **options)
    extra = {"harmful_dataset": dataset.select(range(args["batch"]))} if trainer_class.harmful_data else {}
    collate = lambda feats: {k: torch.tensor([f[k] for f in feats]) for k in feats[0]}
    trainer = trainer_class(model=model, args=config, train_dataset=dataset, data_collator=collate, **extra)
    start = time.perf_counter()
    trainer.train()
    costs = trainer.costs()
    queue.put({"method": method, "layers": layers, "layers_per_draw": options.get("layers_per_draw"),
               "mean_step_s": costs["mean_step_s"], "peak_memory_bytes": costs["peak_memory_bytes"],
               "loaded_memory_bytes": loaded, "memory_kind": costs["memory_kind"],
               "wall_s": time.perf_counter() - start, "device": "cuda" if on_gpu else "cpu"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--dtype", default=None)
    parser.add_argument("--cpu", action="store_true")
    parser.add_argument("--methods", default="sft,vaccine,t-vaccine,repnoise,tar")
    parser.add_argument("--out", default="benchmarks/results/step_cost.json")
    args = vars(parser.parse_args())
    context = multiprocessing.get_context("spawn")
    results = []
    for method in args["methods"].split(","):
        queue = context.Queue()
        process = context.Process(target=measure, args=(method, args, queue))
        process.start()
        results.append(queue.get())
        process.join()
        print(json.dumps(results[-1]), file=sys.stderr)
    base = results[0]
    print(f"command: python {' '.join(sys.argv)}")
    print(f"| method | step (s) | step / SFT | peak mem (GiB, {base['memory_kind']}) | peak / SFT | "
          "training mem above loaded model (GiB) | above-model / SFT |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        above = r["peak_memory_bytes"] - r["loaded_memory_bytes"]
        base_above = base["peak_memory_bytes"] - base["loaded_memory_bytes"]
        label = r["method"] + (f" (S={r['layers_per_draw']}/{r['layers']})" if r["layers_per_draw"] else "")
        print(f"| {label} | {r['mean_step_s']:.2f} | {r['mean_step_s'] / base['mean_step_s']:.2f}x | "
              f"{r['peak_memory_bytes'] / 2**30:.2f} | {r['peak_memory_bytes'] / base['peak_memory_bytes']:.2f}x | "
              f"{above / 2**30:.2f} | {above / base_above:.2f}x |")
    out = Path(args["out"])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": args, "results": results}, indent=2))


if __name__ == "__main__":
    main()
