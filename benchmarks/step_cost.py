"""Step time and peak memory of every alignment method on the same model, batch and length.

    python benchmarks/step_cost.py --shape llama-2-7b --layers-per-draw 4,8,16   # on a GPU, no weights needed
    python benchmarks/step_cost.py --shape tiny --cpu                             # seconds, on CPU
    python benchmarks/step_cost.py --model <hub id, dir or .gguf> --cpu           # real weights

T-Vaccine against Vaccine, every checkpoint mode, budgets, Accelerated T-Vaccine and the
no-unused-work switches, in one run on the default model (the README's trade-off table):

    python benchmarks/step_cost.py --cpu --methods vaccine,t-vaccine --batch 8 --seq-len 128 \
        --layers-per-draw 8 --trainable-scopes reference --checkpoint-modes true,false,auto \
        --budgets 0.7,0.8,0.9,1.0 --perturbation-intervals 10 --ablations lean_pass1,reuse_lower_hidden_state

``--shape NAME`` builds the architecture in ``benchmarks/shapes/NAME.json`` (published config
numbers) with random weights directly on the device: peak memory and step time do not depend on
the weight values, so the papers' 7B claims can be checked without downloading anything.

Each method runs in its own process on the same fixed batch of random token ids (labels = ids),
with LoRA r=8 on every projection, so each peak is that method's own: CUDA peak allocated and
peak reserved on a GPU, the peak resident set size on CPU. Step time is the mean of steps 2..N
(step 1 pays one-off set-up and T-Vaccine's probe). For Vaccine and T-Vaccine the step is split
into pass 1 (the perturbation search), pass 2 (training under the perturbation), the optimizer
and the one-off probe; the GPU is synchronised at these boundaries.

``--budgets`` are fractions of Vaccine's measured peak in this run (Vaccine runs first): each gives
a T-Vaccine job under ``checkpoint_unselected: auto`` with that ``memory_budget_gib``. An
Accelerated T-Vaccine job (``--perturbation-intervals``, tau > 1) reports the step time amortised
over tau steps: one search step (the same T-Vaccine job at tau 1 in this run) and tau - 1 of its own
plain steps. ``--ablations`` repeat Vaccine and T-Vaccine (checkpoint ``true``) with one of the
trainers' no-unused-work switches off, to measure what each saves.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import re
import shlex
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from tvaccine.methods.tvaccine import TRAINABLE_SCOPES

ROOT = Path(__file__).resolve().parents[1]
SHAPES = Path(__file__).resolve().parent / "shapes"
METHOD_ORDER = ("sft", "vaccine", "t-vaccine", "repnoise", "tar")
BASELINES = ("sft", "vaccine")
CHECKPOINT_MODES = ("true", "false", "auto")
# The trainers' switches for work the update never uses (methods/vaccine.py), and who has them.
ABLATIONS = {"lean_pass1": ("vaccine", "t-vaccine"), "reuse_lower_hidden_state": ("t-vaccine",)}
# Trainer methods timed as phases of a step, when the trainer has them.
PHASES = {"search_perturbation": "pass1_s", "probe": "probe_s", "tamper_resistance_gradients": "tar_attack_s"}


@dataclasses.dataclass
class Settings:
    """One benchmark invocation; every job (method, S) runs with these."""

    shape: str | None = None
    model: str | None = None
    batch: int = 10
    seq_len: int = 200
    steps: int = 5
    dtype: str | None = None
    cpu: bool = False
    methods: tuple[str, ...] = METHOD_ORDER
    layers_per_draw: tuple[int, ...] = ()
    trainable_scopes: tuple[str, ...] = ()
    checkpoint_modes: tuple[str, ...] = ()
    budgets: tuple[float, ...] = ()  # fractions of Vaccine's measured peak, for `auto`
    perturbation_intervals: tuple[int, ...] = ()  # Accelerated T-Vaccine's tau values (> 1)
    ablations: tuple[str, ...] = ()

    def validate(self) -> None:
        from tvaccine.errors import UserError
        from tvaccine.models import parse_dtype

        if (self.shape is None) == (self.model is None):
            raise UserError("give exactly one of --shape and --model")
        if self.shape is not None:
            shape_config(self.shape)
        unknown = [m for m in self.methods if m not in METHOD_ORDER]
        if unknown or not self.methods or len(set(self.methods)) != len(self.methods):
            raise UserError(f"methods must be distinct names from {', '.join(METHOD_ORDER)}, got "
                            f"{','.join(self.methods) or 'none'}")
        if self.batch < 1 or self.seq_len < 2:
            raise UserError(f"batch must be >= 1 and length >= 2 tokens, got {self.batch} x {self.seq_len}")
        if self.steps < 2:
            raise UserError(f"steps must be >= 2 (the mean skips step 1), got {self.steps}")
        if any(s < 1 for s in self.layers_per_draw):
            raise UserError(f"S (layers per draw) must be >= 1, got {list(self.layers_per_draw)}")
        tvaccine_options = (self.layers_per_draw, self.trainable_scopes, self.checkpoint_modes, self.budgets,
                            self.perturbation_intervals)
        if any(tvaccine_options) and "t-vaccine" not in self.methods:
            raise UserError("T-Vaccine options are given but t-vaccine is not among the methods")
        unknown = [s for s in self.trainable_scopes if s not in TRAINABLE_SCOPES]
        if unknown:
            raise UserError(f"unknown trainable scope {unknown[0]!r}; choose from {', '.join(TRAINABLE_SCOPES)}")
        unknown = [m for m in self.checkpoint_modes if m not in CHECKPOINT_MODES]
        if unknown:
            raise UserError(f"unknown checkpoint mode {unknown[0]!r}; choose from {', '.join(CHECKPOINT_MODES)}")
        if self.budgets and "auto" not in self.checkpoint_modes:
            raise UserError("budgets are for checkpoint mode auto: add auto to --checkpoint-modes")
        if self.budgets and "vaccine" not in self.methods:
            raise UserError("budgets are fractions of Vaccine's measured peak: add vaccine to --methods")
        if any(b <= 0 for b in self.budgets):
            raise UserError(f"budgets must be > 0 (fractions of Vaccine's peak), got {list(self.budgets)}")
        if any(t < 2 for t in self.perturbation_intervals):
            raise UserError(f"perturbation intervals (Accelerated T-Vaccine's tau) must be >= 2, got "
                            f"{list(self.perturbation_intervals)}")
        unknown = [a for a in self.ablations if a not in ABLATIONS]
        if unknown:
            raise UserError(f"unknown ablation {unknown[0]!r}; choose from {', '.join(ABLATIONS)}")
        if any(not set(ABLATIONS[a]) & set(self.methods) for a in self.ablations):
            raise UserError("the ablations apply to " + ", ".join(sorted({m for a in self.ablations
                                                                          for m in ABLATIONS[a]}))
                            + ": add one of them to --methods")
        depth = shape_config(self.shape)["num_hidden_layers"] if self.shape else None
        if depth is not None and any(s > depth for s in self.layers_per_draw):
            raise UserError(f"S = {max(self.layers_per_draw)} layers per draw, but {self.shape} has {depth} layers")
        parse_dtype(self.dtype)

    def jobs(self) -> list[dict]:
        """One job per method; T-Vaccine once per S, trainable scope and checkpoint mode (None: the
        project's default), `auto` once per budget; then Accelerated T-Vaccine and the ablations.
        Vaccine always runs before T-Vaccine: the budgets are fractions of its peak."""
        jobs = []
        methods = list(self.methods)
        if "vaccine" in methods and "t-vaccine" in methods and methods.index("t-vaccine") < methods.index("vaccine"):
            methods.remove("t-vaccine")
            methods.insert(methods.index("vaccine") + 1, "t-vaccine")
        for method in methods:
            if method != "t-vaccine":
                jobs.append({"method": method})
                jobs += [{"method": method, "ablation": a} for a in self.ablations if method in ABLATIONS[a]]
                continue
            for count in self.layers_per_draw or (None,):
                for scope in self.trainable_scopes or (None,):
                    base = {"method": method, "layers_per_draw": count, "trainable_scope": scope}
                    modes = []
                    for mode in self.checkpoint_modes or (None,):
                        if mode == "auto":
                            modes += [{"checkpoint_unselected": "auto", "budget_fraction": b}
                                      for b in self.budgets or (None,)]
                        else:
                            modes.append({"checkpoint_unselected": mode})
                    jobs += [{**base, **mode} for mode in modes]
                    # Accelerated T-Vaccine under `true` (or the default) and under the largest budget.
                    fast = [m for m in modes if m["checkpoint_unselected"] in (None, "true")][:1]
                    fast += [m for m in modes if m["checkpoint_unselected"] == "auto"][-1:]
                    jobs += [{**base, **mode, "perturbation_interval": tau}
                             for tau in self.perturbation_intervals for mode in fast or [{}]]
                    checkpointed = next((m for m in modes if m["checkpoint_unselected"] in (None, "true")), {})
                    jobs += [{**base, **checkpointed, "ablation": a} for a in self.ablations
                             if method in ABLATIONS[a]]
        return jobs


def shape_names() -> list[str]:
    return sorted(p.stem for p in SHAPES.glob("*.json"))


def shape_config(name: str) -> dict:
    from tvaccine.errors import UserError

    path = SHAPES / f"{name}.json"
    if not path.is_file():
        raise UserError(f"unknown shape {name!r}; choose from {', '.join(shape_names())}")
    return json.loads(path.read_text())["config"]


def build_shape_model(name: str, dtype, device):
    """The architecture of ``name`` with random weights, created on ``device`` in ``dtype``."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(**shape_config(name))
    with torch.device(device):
        return AutoModelForCausalLM.from_config(config, dtype=dtype)


def device_slug(name: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'nvidia-h100-80gb-hbm3': a file-name-safe device name."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def cpu_model() -> str:
    """The processor's name (Linux), which CPU timings mean nothing without."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return "unknown"
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "unknown")


def memory_now(device) -> dict:
    import resource

    import torch

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    if device.type != "cuda":
        return {"peak_rss_bytes": rss}
    return {"peak_rss_bytes": rss, "peak_allocated_bytes": torch.cuda.max_memory_allocated(device),
            "peak_reserved_bytes": torch.cuda.max_memory_reserved(device)}


def step_timer(device):
    """A Trainer callback that times every optimizer step and the phases in PHASES inside it."""
    import torch
    from transformers import TrainerCallback

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.steps: list[dict] = []
            self._current: dict = defaultdict(float)
            self._start = 0.0

        def wrap(self, trainer, attribute: str, phase: str) -> None:
            inner = getattr(trainer, attribute)

            def timed(*args, **kwargs):
                sync()
                start = time.perf_counter()
                try:
                    return inner(*args, **kwargs)
                finally:
                    sync()
                    self._current[phase] += time.perf_counter() - start

            setattr(trainer, attribute, timed)

        def on_step_begin(self, args, state, control, **kwargs):
            sync()
            self._current = defaultdict(float)
            self._start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            sync()
            self._current["step_s"] = time.perf_counter() - self._start
            self.steps.append(dict(self._current))

    return StepTimer()


def summarise_steps(steps: list[dict]) -> dict:
    """Mean of steps 2..N, split into phases; the probe (step 1 only) is reported once, whole. Steps
    that searched no perturbation (Accelerated T-Vaccine between searches) are also averaged apart."""
    steady = steps[1:]
    plain = [s["step_s"] for s in steady if not s.get("pass1_s")]
    searching = [s["step_s"] for s in steady if s.get("pass1_s")]

    def mean(key):
        return sum(s.get(key, 0.0) for s in steady) / len(steady)

    step, training = mean("step_s"), mean("training_step_s")
    phases = {"pass1_s": mean("pass1_s"), "tar_attack_s": mean("tar_attack_s")}
    phases["pass2_s"] = training - phases["pass1_s"] - phases["tar_attack_s"] - mean("probe_s")
    phases["optimizer_s"] = step - training
    phases["probe_once_s"] = sum(s.get("probe_s", 0.0) for s in steps)
    return {"mean_step_s": step, "first_step_s": steps[0]["step_s"], "step_times_s": [s["step_s"] for s in steps],
            "searched": [bool(s.get("pass1_s")) for s in steps], "phases": phases,
            "plain_step_s": sum(plain) / len(plain) if plain else None,
            "search_step_s": sum(searching) / len(searching) if searching else None}


def measure(job: dict, settings: Settings) -> dict:
    """Build the model, train ``settings.steps`` steps of one method on the fixed batch, return its cost."""
    import torch
    from datasets import Dataset
    from transformers import PrinterCallback

    from tvaccine.methods import METHODS
    from tvaccine.models import add_lora, default_dtype, find_decoder_layers, load_model, parse_dtype

    device = torch.device("cpu" if settings.cpu or not torch.cuda.is_available() else "cuda")
    dtype = parse_dtype(settings.dtype) or default_dtype(device)
    torch.manual_seed(0)
    if settings.shape:
        model = build_shape_model(settings.shape, dtype, device)
    else:
        model, _ = load_model(settings.model, dtype=dtype, device=str(device))
    model.config.use_cache = False
    layers = len(find_decoder_layers(model))
    model = add_lora(model, r=8, alpha=1, dropout=0.0)
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(10, model.config.vocab_size, (settings.batch, settings.seq_len), generator=generator).tolist()
    # One batch's rows: every step (every epoch of this data set) trains on the same batch.
    dataset = Dataset.from_dict({"input_ids": ids, "attention_mask": [[1] * settings.seq_len] * len(ids),
                                 "labels": ids})
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    loaded = memory_now(device)
    options = {}
    if job["method"] == "t-vaccine":  # one probe and one draw, at step 1: steps 2..N train on a fixed draw
        keys = ("layers_per_draw", "trainable_scope", "checkpoint_unselected", "memory_budget_gib",
                "perturbation_interval")
        options = {"resample_every": 10**6, "probe_every": 10**6, "probe_samples": settings.batch,
                   **{k: job[k] for k in keys if job.get(k) is not None}}
    config_class, trainer_class = METHODS[job["method"]]
    with tempfile.TemporaryDirectory(prefix="tvaccine-step-cost-") as output_dir:
        config = config_class(output_dir=output_dir, max_steps=settings.steps,
                              per_device_train_batch_size=settings.batch, disable_tqdm=True,
                              use_cpu=device.type == "cpu", logging_steps=10**6, seed=0, **options)
        extra = {"harmful_dataset": dataset} if trainer_class.harmful_data else {}

        def collate(rows):
            return {k: torch.tensor([row[k] for row in rows]) for k in rows[0]}

        trainer = trainer_class(model=model, args=config, train_dataset=dataset, data_collator=collate, **extra)
        if job.get("ablation"):
            setattr(trainer, job["ablation"], False)
        timer = step_timer(device)
        timer.wrap(trainer, "training_step", "training_step_s")
        for attribute, phase in PHASES.items():
            if hasattr(trainer, attribute):
                timer.wrap(trainer, attribute, phase)
        trainer.add_callback(timer)
        trainer.remove_callback(PrinterCallback)  # keeps stdout for the table
        start = time.perf_counter()
        train_loss = trainer.train().training_loss
        wall = time.perf_counter() - start
    sampler = getattr(trainer, "sampler", None)
    tvaccine = {}
    if sampler is not None:
        uncheckpointed = sorted(trainer.layer_modes(sampler.selected)[1])
        checkpointed = sorted(layer.index for layer in trainer.hooks.layers if layer.layer.gradient_checkpointing)
        plans = [e for e in trainer.layer_history if e["event"] == "checkpoint_plan"]
        modes = trainer.pass2_modes(sampler.selected)
        recording = [i for i, mode in modes.items() if mode.in_graph and not mode.fixed]
        tvaccine = {"layers_per_draw": sampler.layers_per_draw, "trainable_scope": config.trainable_scope,
                    "probe_batch_size": config.probe_batch_size, "selected_layers": sampler.selected,
                    "uncheckpointed_layers": uncheckpointed, "checkpoint_mode": config.checkpoint_unselected,
                    "memory_budget_gib": config.memory_budget_gib,
                    "perturbation_interval": config.perturbation_interval,
                    # at the last step: the layers the checkpointing covered, of those not drawn
                    "checkpointed_layers": checkpointed, "unselected_layers": layers - len(uncheckpointed),
                    # those of them that record activations in pass 2 (above the lowest trainable layer)
                    "recording_layers": recording,
                    "checkpoint_plans": plans, "reused_hidden_states": trainer.reused_hidden_states}
    return {**job, "rho": getattr(config, "rho", None), "layers": layers, **tvaccine,
            **summarise_steps(timer.steps), **memory_now(device),
            "loaded": loaded, "train_loss": train_loss, "wall_s": wall, "device": device.type,
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "cpu_model": cpu_model(),
            "dtype": str(dtype).removeprefix("torch."), "threads": torch.get_num_threads(),
            "attention": getattr(model.config, "_attn_implementation", None)}


def _measure_child(job: dict, settings: Settings, result_path: str) -> None:
    """Entry point of a spawned process: the result (or the error) goes to ``result_path``."""
    from tvaccine.errors import UserError

    try:
        result = measure(job, settings)
    except UserError as exc:
        result = {**job, "user_error": str(exc)}
    except Exception as exc:  # an out-of-memory at a large shape is a result, not a crash of the benchmark
        result = {**job, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}
        Path(result_path).write_text(json.dumps(result))
        raise
    Path(result_path).write_text(json.dumps(result))


def run_jobs(settings: Settings, spawn: bool = True, log=print) -> list[dict]:
    """Every job's result, in order. ``spawn=False`` runs them in this process (tests): the peak
    RSS is then the process's, not each method's."""
    from tvaccine.errors import UserError

    results = []
    context = multiprocessing.get_context("spawn")
    for job in settings.jobs():
        if job.get("budget_fraction") is not None:
            vaccine = next((r for r in results if r["method"] == "vaccine" and not r.get("ablation")), None)
            if vaccine is None or "error" in vaccine:
                result = {**job, "error": "no Vaccine peak to take the budget from", "label": label(job),
                          "isolated": spawn}
                log(json.dumps(result))
                results.append(result)
                continue
            job = {**job, "memory_budget_gib": job["budget_fraction"] * vaccine[budget_key(vaccine)] / 2**30}
        if not spawn:
            result = {**measure(job, settings), "isolated": False}
        else:
            with tempfile.TemporaryDirectory() as folder:
                path = Path(folder) / "result.json"
                process = context.Process(target=_measure_child, args=(job, settings, str(path)))
                process.start()
                process.join()
                result = json.loads(path.read_text()) if path.is_file() else \
                    {**job, "error": f"the process died with exit code {process.exitcode}"}
            if "user_error" in result:
                raise UserError(result["user_error"])
            result["isolated"] = True
        result["label"] = label(result)
        log(json.dumps(result))
        results.append(result)
    amortise(results)
    add_ratios(results)
    return results


def budget_key(result: dict) -> str:
    """The memory that ``auto`` budgets: what ``TVaccineTrainer.measured_peak_bytes`` reads."""
    return "peak_allocated_bytes" if result.get("device") == "cuda" else "peak_rss_bytes"


def amortise(results: list[dict]) -> None:
    """Accelerated T-Vaccine's step, averaged over one period of tau steps: one search step and
    tau - 1 plain ones. The search step is this job's own when one fell in steps 2..N, else the
    matching T-Vaccine job's (same S, scope and checkpointing, tau 1)."""
    for result in results:
        tau = result.get("perturbation_interval") or 1
        if result["method"] != "t-vaccine" or tau == 1 or "error" in result or result.get("plain_step_s") is None:
            continue
        search, source = result.get("search_step_s"), "this job"
        if search is None:
            same = ("layers_per_draw", "trainable_scope", "checkpoint_unselected", "budget_fraction")
            twin = next((r for r in results if r["method"] == "t-vaccine" and "error" not in r and not r.get("ablation")
                         and (r.get("perturbation_interval") or 1) == 1
                         and all(r.get(k) == result.get(k) for k in same)), None)
            if twin is None:
                continue
            search, source = twin["mean_step_s"], twin["label"]
        result["amortised"] = {"tau": tau, "search_step_s": search, "plain_step_s": result["plain_step_s"],
                               "search_step_from": source}
        result["mean_step_s"] = (search + (tau - 1) * result["plain_step_s"]) / tau


def label(result: dict) -> str:
    name = {"sft": "SFT", "vaccine": "Vaccine", "t-vaccine": "T-Vaccine", "repnoise": "RepNoise", "tar": "TAR"}
    text = name[result["method"]]
    if result["method"] == "t-vaccine" and "layers" in result:
        text += f" S={result['layers_per_draw']}/{result['layers']}, {result['trainable_scope']} scope"
    if result.get("checkpoint_unselected") is not None:  # asked for with --checkpoint-modes
        text += f", checkpoint {result['checkpoint_unselected']}"
        if result.get("budget_fraction") is not None:
            text += f" within {result['budget_fraction']:g}x Vaccine's peak"
    if (result.get("perturbation_interval") or 1) > 1:
        text += f", accelerated tau {result['perturbation_interval']} (non-paper)"
    if result.get("ablation"):
        text += f", without {result['ablation']}"
    if result.get("rho") is not None:
        text += f" (rho {result['rho']:g})"
    return text


def memory_keys(results: list[dict]) -> list[str]:
    return ["peak_allocated_bytes", "peak_reserved_bytes"] if any(r.get("device") == "cuda" for r in results) \
        else ["peak_rss_bytes"]


def add_ratios(results: list[dict]) -> None:
    """``ratios[metric][baseline]``: this job's value over the SFT / Vaccine job's (None without one)."""
    baselines = {r["method"]: r for r in results if r["method"] in BASELINES and "error" not in r}
    for result in results:
        result["ratios"] = {}
        if "error" in result:
            continue
        for key in ["mean_step_s", *memory_keys(results)]:
            result["ratios"][key] = {name: result[key] / baselines[name][key] if name in baselines else None
                                     for name in BASELINES}


def header(command: str, device: str, dtype: str) -> str:
    """The first lines of every benchmark report: how to run it again and on what it ran."""
    from tvaccine.results_io import environment

    env = environment()
    try:
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
    except OSError:  # no git: the commit read from .git is all there is
        dirty = ""
    commit = (env["git_commit"] or "unknown")[:12] + (" with uncommitted changes" if dirty else "")
    return (f"```\n{command}\n```\n\ncommit {commit}; device {device}; dtype {dtype}; torch {env['torch']}; "
            f"transformers {env['transformers']}; peft {env['peft']}.\n")


def markdown(results: list[dict], command: str, settings: Settings) -> str:
    done = [r for r in results if "error" not in r]
    first = done[0] if done else {}
    keys = memory_keys(results)
    titles = {"peak_allocated_bytes": "peak allocated", "peak_reserved_bytes": "peak reserved",
              "peak_rss_bytes": "peak RSS"}

    def ratio(result, key, base):
        value = result["ratios"][key][base]
        return "–" if value is None else f"{value:.2f}"

    head = ["method", "step (s)", "/ SFT", "/ Vaccine"]
    for key in keys:
        head += [f"{titles[key]} (GiB)", "/ SFT", "/ Vaccine"]
    head += [f"{titles[keys[0]]} above the loaded model (GiB)", "pass 1 (s)", "pass 2 (s)", "optimizer (s)",
             "probe, once (s)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['label']} | failed: {r['error']} |" + " |" * (len(head) - 2))
            continue
        cells = [r["label"], f"{r['mean_step_s']:.3f}", ratio(r, "mean_step_s", "sft"),
                 ratio(r, "mean_step_s", "vaccine")]
        for key in keys:
            cells += [f"{r[key] / 2**30:.2f}", ratio(r, key, "sft"), ratio(r, key, "vaccine")]
        cells.append(f"{(r[keys[0]] - r['loaded'][keys[0]]) / 2**30:.2f}")
        phases = r["phases"]
        two_pass = r["method"] in ("vaccine", "t-vaccine")
        cells += [f"{phases['pass1_s']:.3f}" if two_pass else "–", f"{phases['pass2_s']:.3f}",
                  f"{phases['optimizer_s']:.3f}",
                  f"{phases['probe_once_s']:.3f}" if r["method"] == "t-vaccine" else "–"]
        lines.append("| " + " | ".join(cells) + " |")
    model = f"shape {settings.shape} (random weights)" if settings.shape else f"model {settings.model}"
    drawn = [f"{r['label']}: drawn {r['selected_layers']}, uncheckpointed {r['uncheckpointed_layers']}"
             for r in done if r.get("selected_layers")]
    probe = next((r["probe_batch_size"] for r in done if "probe_batch_size" in r), None)
    notes = [f"{model}, {first.get('layers', '?')} layers, LoRA r=8 on every projection, batch {settings.batch} x "
             f"{settings.seq_len} tokens, the same batch at every step; step time: mean of steps 2-{settings.steps}"
             + (", the GPU synchronised at every phase boundary." if first.get("device") == "cuda" else "."),
             "pass 2: training under the perturbation (for SFT, RepNoise, TAR: the whole forward and backward; "
             "TAR's simulated attack is in the JSON); optimizer: the rest of the step"
             + (f"; probe: T-Vaccine's layer probe on {probe} sample(s), in step 1 only." if probe else ".")]
    if drawn:
        notes.append("T-Vaccine layers: " + "; ".join(drawn) + ".")
    if any(r.get("amortised") for r in done):
        notes.append("accelerated T-Vaccine: step time amortised over tau steps, one search step (the same "
                     "T-Vaccine job at tau 1 unless it fell in steps 2-N) and tau - 1 plain steps of its own.")
    if not all(r.get("isolated") for r in results):
        notes.append("the methods ran in one process: peak RSS is the process's, not each method's.")
    device = first.get("device_name", "unknown")
    threads = f" ({first['cpu_model']}, torch threads: {first['threads']})" if first.get("device") == "cpu" else ""
    return (header(command, device + threads, first.get("dtype", "?")) + f"\n{chr(10).join(lines)}\n\n"
            + "".join(f"- {n}\n" for n in notes) + tradeoff_table(results))


def _ratio(value, base) -> str:
    return f"{value / base:.2f}" if base else "–"


def tradeoff_table(results: list[dict]) -> str:
    """T-Vaccine against Vaccine, one row per T-Vaccine job: how its checkpointing was planned and
    what it cost (only when the run asked for checkpoint modes, budgets, tau or ablations)."""
    asked = [r for r in results if r.get("checkpoint_unselected") is not None or r.get("budget_fraction") is not None
             or (r.get("perturbation_interval") or 1) > 1 or r.get("ablation")]
    if not asked:
        return ""
    vaccine = next((r for r in results if r["method"] == "vaccine" and not r.get("ablation") and "error" not in r), {})
    head = ["job", "budget (GiB)", "layers checkpointed", "estimated peak (GiB)", "measured peak (GiB)",
            "peak / Vaccine", "step (s)", "step / Vaccine", "pass 1 (s)", "pass 2 (s)", "pass 2s from pass 1's state"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    rows = [r for r in results if r["method"] in ("vaccine", "t-vaccine")]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['label']} | failed: {r['error']} |" + " |" * (len(head) - 2))
            continue
        key = budget_key(r)
        plan = next((e for e in reversed(r.get("checkpoint_plans", [])) if not e.get("calibration")), None)
        estimate = f"{plan['estimated_peak_bytes'] / 2**30:.2f}" if plan else "–"
        if r["method"] == "t-vaccine":
            ckpt = len(set(r["checkpointed_layers"]) & set(r["recording_layers"]))
            covered = f"{ckpt} of {len(r['recording_layers'])}"
            if plan and plan.get("pass1_checkpointed") is not None:
                covered += f" (pass 1: {len(set(plan['pass1_checkpointed']) & set(r['recording_layers']))})"
        else:
            covered = "–"
        budget = f"{r['memory_budget_gib']:.2f}" if r.get("memory_budget_gib") else "–"
        cells = [r["label"], budget, covered, estimate, f"{r[key] / 2**30:.2f}", _ratio(r[key], vaccine.get(key)),
                 f"{r['mean_step_s']:.3f}", _ratio(r["mean_step_s"], vaccine.get("mean_step_s")),
                 f"{r['phases']['pass1_s']:.3f}", f"{r['phases']['pass2_s']:.3f}",
                 str(r.get("reused_hidden_states", "–"))]
        lines.append("| " + " | ".join(cells) + " |")
    return ("\n## T-Vaccine against Vaccine\n\n" + "\n".join(lines) + "\n\n"
            "- layers checkpointed: in pass 2 of the last step, of the layers that could be: neither drawn, nor kept "
            "uncheckpointed next to a drawn one, nor below the lowest trainable layer (those record nothing either "
            "way); `auto` gives pass 1 its own plan. Estimated peak: the `auto` planner's estimate of its last plan; "
            "measured peak: the process's, as in the table above.\n")


def default_out(settings: Settings, results: list[dict]) -> Path:
    name = settings.shape or device_slug(Path(settings.model).name)
    device = next((r["device_name"] for r in results if "device_name" in r), "unknown")
    return ROOT / "docs" / "results" / "step_cost" / f"{name}_{device_slug(device)}"


def write_report(results: list[dict], settings: Settings, command: str, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / "step_cost.json").write_text(json.dumps(
        {"command": command, "settings": dataclasses.asdict(settings), "results": results}, indent=1))
    (out / "step_cost.md").write_text(markdown(results, command, settings))
    return out


def parse_list(text: str, kind=str) -> tuple:
    from tvaccine.errors import UserError

    try:
        return tuple(kind(item) for item in text.split(",") if item.strip())
    except ValueError:
        raise UserError(f"not a comma-separated list of {kind.__name__}: {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--shape", help=f"random-weight architecture: {', '.join(shape_names())}")
    what.add_argument("--model", help="real weights: hub id, directory or .gguf (default: the project's default "
                                      "model, when no --shape is given)")
    parser.add_argument("--batch", type=int, default=10, help="sequences per step (papers: 10)")
    parser.add_argument("--seq-len", type=int, default=200, help="tokens per sequence (papers: 200)")
    parser.add_argument("--steps", type=int, default=5, help="optimizer steps; the mean skips the first")
    parser.add_argument("--dtype", help="fp32, bf16 or fp16 (default: bf16 on a GPU, fp32 on CPU)")
    parser.add_argument("--cpu", action="store_true", help="run on CPU even when a GPU is present")
    parser.add_argument("--methods", default=",".join(METHOD_ORDER))
    parser.add_argument("--layers-per-draw", default="", help="T-Vaccine's S values, e.g. 4,8,16: one run each "
                                                              "(default: the project's default S)")
    parser.add_argument("--trainable-scopes", default="", help=f"T-Vaccine's trainable scopes, one run each: "
                                                               f"{', '.join(TRAINABLE_SCOPES)} (default: the "
                                                               "project's default)")
    parser.add_argument("--checkpoint-modes", default="", help="T-Vaccine's checkpoint_unselected values, one run "
                                                               f"each: {', '.join(CHECKPOINT_MODES)}")
    parser.add_argument("--budgets", default="", help="with auto among the checkpoint modes: memory budgets as "
                                                      "fractions of Vaccine's peak in this run, one run each, "
                                                      "e.g. 0.7,0.8,0.9,1.0")
    parser.add_argument("--perturbation-intervals", default="", help="Accelerated T-Vaccine's tau values (>= 2), one "
                                                                     "run each, e.g. 10")
    parser.add_argument("--ablations", default="", help="switches of work the update never uses, each turned off "
                                                        f"in one more run: {', '.join(ABLATIONS)}")
    parser.add_argument("--out", help="output folder (default: docs/results/step_cost/<shape or model>_<device>)")
    args = parser.parse_args(argv)

    from tvaccine.errors import UserError
    from tvaccine.models import DEFAULT_MODEL

    command = "python " + shlex.join(["benchmarks/step_cost.py", *(sys.argv[1:] if argv is None else argv)])
    try:
        settings = Settings(shape=args.shape, model=None if args.shape else args.model or DEFAULT_MODEL,
                            batch=args.batch, seq_len=args.seq_len, steps=args.steps, dtype=args.dtype, cpu=args.cpu,
                            methods=parse_list(args.methods), layers_per_draw=parse_list(args.layers_per_draw, int),
                            trainable_scopes=parse_list(args.trainable_scopes),
                            checkpoint_modes=parse_list(args.checkpoint_modes), budgets=parse_list(args.budgets, float),
                            perturbation_intervals=parse_list(args.perturbation_intervals, int),
                            ablations=parse_list(args.ablations))
        settings.validate()
        results = run_jobs(settings, log=lambda line: print(line, file=sys.stderr))
    except UserError as exc:
        print(f"step_cost: error: {exc}", file=sys.stderr)
        return 2
    out = write_report(results, settings, command, Path(args.out) if args.out else default_out(settings, results))
    print((out / "step_cost.md").read_text())
    print(f"written: {out / 'step_cost.md'}, {out / 'step_cost.json'}")
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
