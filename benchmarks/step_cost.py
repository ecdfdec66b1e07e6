"""Step time and peak memory of every alignment method on the same model, batch and length.

    python benchmarks/step_cost.py --shape llama-2-7b --layers-per-draw 4,8,16   # on a GPU, no weights needed
    python benchmarks/step_cost.py --shape tiny --cpu --steps 3                   # seconds, on CPU
    python benchmarks/step_cost.py --model <hub id, dir or .gguf> --cpu           # real weights

T-Vaccine against Vaccine on the default model (the README's numbers): every unselected layer
checkpointed, none, a few counts in between, and Accelerated T-Vaccine, in one run on one batch:

    python benchmarks/step_cost.py --cpu --methods vaccine,t-vaccine --batch 8 --seq-len 128 \\
        --layers-per-draw 8 --trainable-scopes reference --checkpoint-modes true,false,4,8,12 \\
        --perturbation-intervals 10 --precision auto

``--checkpoint-modes`` takes T-Vaccine's ``checkpoint_unselected`` values: true, false, or a number
k of unselected layers run checkpointed; the table "T-Vaccine by checkpointed layers" then shows
the step time and peak of each, on your model, batch and length, to pick the fastest that fits.

``--shape NAME`` builds the architecture in ``benchmarks/shapes/NAME.json`` (published config
numbers) with random weights directly on the device: peak memory and step time do not depend on
the weight values, so the papers' 7B claims can be checked without downloading anything.

Each job runs in its own process on the same fixed batch of random token ids (labels = ids), with
the project's LoRA (r 8, alpha 1, dropout 0.1, every projection) and ``--precision`` as alignment
runs it (``tvaccine.precision``: on a CPU with native bf16, ``auto`` is fp32 weights under bf16
autocast). Step 0 is a warm-up (one-off set-up and T-Vaccine's probe); the ``--steps`` after it
are timed, each with its own peak: CUDA peak allocated (and reserved) after resetting the peak at
the start of the step; on Linux CPUs the resident set's high-water mark (VmHWM) after resetting it
through ``/proc/self/clear_refs``; elsewhere the process's peak so far. The tables give the median
step and its spread; ratios are of medians, to the SFT and Vaccine jobs of the same run. For
Vaccine and T-Vaccine the step is split into pass 1 (the perturbation search), pass 2 (training
under it), the optimizer and the one-off probe; the GPU is synchronised at these boundaries. An
Accelerated T-Vaccine job (tau > 1) reports its step amortised over tau steps: one search step and
tau - 1 plain ones.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from tvaccine.methods.tvaccine import TRAINABLE_SCOPES
from tvaccine.precision import PRECISIONS

ROOT = Path(__file__).resolve().parents[1]
SHAPES = Path(__file__).resolve().parent / "shapes"
METHOD_ORDER = ("sft", "vaccine", "t-vaccine", "repnoise", "tar")
BASELINES = ("sft", "vaccine")
# Trainer methods timed as phases of a step, when the trainer has them.
PHASES = {"search_perturbation": "pass1_s", "probe": "probe_s", "tamper_resistance_gradients": "tar_attack_s"}
CLEAR_REFS = Path("/proc/self/clear_refs")


def checkpoint_mode(text: str) -> bool | int:
    """true, false or a number of layers >= 0, as ``checkpoint_unselected`` takes them."""
    from tvaccine.errors import UserError

    word = text.strip().lower()
    if word in ("true", "false"):
        return word == "true"
    if word.isdigit():
        return int(word)
    raise UserError(f"unknown checkpoint mode {text!r}; use true, false or a number of layers >= 0")


@dataclasses.dataclass
class Settings:
    """One benchmark invocation; every job (method, S, checkpoint mode, tau) runs with these."""

    shape: str | None = None
    model: str | None = None
    batch: int = 10
    seq_len: int = 200
    steps: int = 10  # timed, after one warm-up step
    precision: str = "auto"
    cpu: bool = False
    methods: tuple[str, ...] = METHOD_ORDER
    layers_per_draw: tuple[int, ...] = ()
    trainable_scopes: tuple[str, ...] = ()
    checkpoint_modes: tuple[bool | int, ...] = ()
    perturbation_intervals: tuple[int, ...] = ()  # Accelerated T-Vaccine's tau values (> 1)

    def validate(self) -> None:
        from tvaccine.errors import UserError

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
        if self.steps < 1:
            raise UserError(f"steps must be >= 1 (timed, after the warm-up step), got {self.steps}")
        if self.precision not in PRECISIONS:
            raise UserError(f"unknown precision {self.precision!r}; use one of {', '.join(PRECISIONS)}")
        if any(s < 1 for s in self.layers_per_draw):
            raise UserError(f"S (layers per draw) must be >= 1, got {list(self.layers_per_draw)}")
        tvaccine_options = (self.layers_per_draw, self.trainable_scopes, self.checkpoint_modes,
                            self.perturbation_intervals)
        if any(tvaccine_options) and "t-vaccine" not in self.methods:
            raise UserError("T-Vaccine options are given but t-vaccine is not among the methods")
        unknown = [s for s in self.trainable_scopes if s not in TRAINABLE_SCOPES]
        if unknown:
            raise UserError(f"unknown trainable scope {unknown[0]!r}; choose from {', '.join(TRAINABLE_SCOPES)}")
        if any(t < 2 for t in self.perturbation_intervals):
            raise UserError(f"perturbation intervals (Accelerated T-Vaccine's tau) must be >= 2, got "
                            f"{list(self.perturbation_intervals)}")
        depth = shape_config(self.shape)["num_hidden_layers"] if self.shape else None
        if depth is not None and any(s > depth for s in self.layers_per_draw):
            raise UserError(f"S = {max(self.layers_per_draw)} layers per draw, but {self.shape} has {depth} layers")

    def jobs(self) -> list[dict]:
        """One job per method; T-Vaccine once per S, trainable scope and checkpoint mode (None: the
        project's default), then Accelerated T-Vaccine under the first of true / the default / the
        first mode given."""
        jobs = []
        for method in self.methods:
            if method != "t-vaccine":
                jobs.append({"method": method})
                continue
            for count in self.layers_per_draw or (None,):
                for scope in self.trainable_scopes or (None,):
                    base = {"method": method, "layers_per_draw": count, "trainable_scope": scope}
                    modes = list(self.checkpoint_modes) or [None]
                    jobs += [{**base, "checkpoint_unselected": mode} for mode in modes]
                    fast = next((m for m in modes if m is None or m is True), modes[0])
                    jobs += [{**base, "checkpoint_unselected": fast, "perturbation_interval": tau}
                             for tau in self.perturbation_intervals]
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


class StepMemory:
    """The peak memory of one step: reset at its start, read at its end.

    CUDA: ``reset_peak_memory_stats``, then ``max_memory_allocated`` / ``max_memory_reserved``. Linux
    CPU: writing 5 to ``/proc/self/clear_refs`` resets the resident set's high-water mark (VmHWM in
    ``/proc/self/status``) to the current resident set. Elsewhere only the process's peak so far
    (``ru_maxrss``) exists: ``per_step`` is then False."""

    def __init__(self, device):
        self.device = device
        self.per_step = device.type == "cuda" or self._clear_refs()
        self.keys = ["peak_allocated_bytes", "peak_reserved_bytes"] if device.type == "cuda" else ["peak_rss_bytes"]

    def _clear_refs(self) -> bool:
        try:
            CLEAR_REFS.write_text("5")
            return self._status("VmHWM") is not None
        except OSError:
            return False

    @staticmethod
    def _status(key: str) -> int | None:
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
        except (OSError, ValueError, IndexError):
            pass
        return None

    def now(self) -> dict:
        """Memory held now (before any step: the loaded model)."""
        import torch

        if self.device.type == "cuda":
            return {"allocated_bytes": torch.cuda.memory_allocated(self.device),
                    "reserved_bytes": torch.cuda.memory_reserved(self.device)}
        return {"rss_bytes": self._status("VmRSS") or self._max_rss()}

    def reset(self) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        elif self.per_step:
            CLEAR_REFS.write_text("5")

    def peak(self) -> dict:
        import torch

        if self.device.type == "cuda":
            return {"peak_allocated_bytes": torch.cuda.max_memory_allocated(self.device),
                    "peak_reserved_bytes": torch.cuda.max_memory_reserved(self.device)}
        return {"peak_rss_bytes": (self._status("VmHWM") if self.per_step else None) or self._max_rss()}

    @staticmethod
    def _max_rss() -> int:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def step_meter(device):
    """A Trainer callback that times every optimizer step and the phases in PHASES inside it, and
    reads each step's peak memory (the reset and the reading lie outside the timed span)."""
    import torch
    from transformers import TrainerCallback

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    class StepMeter(TrainerCallback):
        def __init__(self):
            self.memory = StepMemory(device)
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
            self.memory.reset()
            self._current = defaultdict(float)
            self._start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            sync()
            self._current["step_s"] = time.perf_counter() - self._start
            self.steps.append({**self._current, **self.memory.peak()})

    return StepMeter()


def spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "sd": statistics.stdev(values) if len(values) > 1 else None, "n": len(values)}


def summarise_steps(steps: list[dict], memory_keys: list[str]) -> dict:
    """Step 0 is the warm-up; the rest are timed. Per phase and step time: the median over the timed
    steps; memory: the largest per-step peak. Steps that searched no perturbation (Accelerated
    T-Vaccine between searches) are also summarised apart."""
    timed = steps[1:]
    for step in timed:
        step["pass2_s"] = (step.get("training_step_s", 0.0) - step.get("pass1_s", 0.0) - step.get("tar_attack_s", 0.0)
                           - step.get("probe_s", 0.0))
        step["optimizer_s"] = step["step_s"] - step.get("training_step_s", 0.0)
    plain = [s["step_s"] for s in timed if not s.get("pass1_s")]
    searching = [s["step_s"] for s in timed if s.get("pass1_s")]
    phases = {k: statistics.median(s.get(k, 0.0) for s in timed)
              for k in ("pass1_s", "pass2_s", "optimizer_s", "tar_attack_s")}
    phases["probe_once_s"] = sum(s.get("probe_s", 0.0) for s in steps)
    times = [s["step_s"] for s in timed]
    return {"step_s": spread(times), "median_step_s": statistics.median(times), "warmup_step_s": steps[0]["step_s"],
            "step_times_s": times, "searched": [bool(s.get("pass1_s")) for s in timed], "phases": phases,
            "plain_step_s": statistics.median(plain) if plain else None,
            "search_step_s": statistics.median(searching) if searching else None,
            **{key: max(s[key] for s in timed) for key in memory_keys},
            "step_peaks": {key: [s[key] for s in timed] for key in memory_keys}}


def measure(job: dict, settings: Settings) -> dict:
    """Build the model, train 1 + ``settings.steps`` steps of one job on the fixed batch, return its cost."""
    import torch
    from datasets import Dataset
    from transformers import PrinterCallback

    from tvaccine.methods import METHODS
    from tvaccine.models import add_lora, find_decoder_layers, load_model, parse_dtype
    from tvaccine.precision import describe, train_with_precision, weights_dtype

    device = torch.device("cpu" if settings.cpu or not torch.cuda.is_available() else "cuda")
    dtype = parse_dtype(weights_dtype(settings.precision, device))
    torch.manual_seed(0)
    if settings.shape:
        model = build_shape_model(settings.shape, dtype, device)
    else:
        model, _ = load_model(settings.model, dtype=dtype, device=str(device))
    model.config.use_cache = False
    layers = len(find_decoder_layers(model))
    model = add_lora(model)  # the project's LoRA: r 8, alpha 1, dropout 0.1
    lora = next(iter(model.peft_config.values()))
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(10, model.config.vocab_size, (settings.batch, settings.seq_len), generator=generator).tolist()
    # One batch's rows: every step (every epoch of this data set) trains on the same batch.
    dataset = Dataset.from_dict({"input_ids": ids, "attention_mask": [[1] * settings.seq_len] * len(ids),
                                 "labels": ids})
    options = {}
    if job["method"] == "t-vaccine":  # one probe and one draw, in the warm-up step: the timed steps keep that draw
        keys = ("layers_per_draw", "trainable_scope", "checkpoint_unselected", "perturbation_interval")
        options = {"resample_every": 10**6, "probe_every": 10**6, "probe_samples": settings.batch,
                   **{k: job[k] for k in keys if job.get(k) is not None}}
    train = train_with_precision(settings.precision, {"use_cpu": device.type == "cpu"})
    config_class, trainer_class = METHODS[job["method"]]
    meter = step_meter(device)
    loaded = meter.memory.now()
    with tempfile.TemporaryDirectory(prefix="tvaccine-step-cost-") as output_dir:
        config = config_class(output_dir=output_dir, max_steps=1 + settings.steps,
                              per_device_train_batch_size=settings.batch, disable_tqdm=True,
                              logging_steps=10**6, seed=0, **train, **options)
        extra = {"harmful_dataset": dataset} if trainer_class.harmful_data else {}

        def collate(rows):
            return {k: torch.tensor([row[k] for row in rows]) for k in rows[0]}

        trainer = trainer_class(model=model, args=config, train_dataset=dataset, data_collator=collate, **extra)
        meter.wrap(trainer, "training_step", "training_step_s")
        for attribute, phase in PHASES.items():
            if hasattr(trainer, attribute):
                meter.wrap(trainer, attribute, phase)
        trainer.add_callback(meter)
        trainer.remove_callback(PrinterCallback)  # keeps stdout for the table
        start = time.perf_counter()
        train_loss = trainer.train().training_loss
        wall = time.perf_counter() - start
    sampler = getattr(trainer, "sampler", None)
    tvaccine = {}
    if sampler is not None:
        kept = sorted(trainer.layer_modes(sampler.selected)[1])
        checkpointed = sorted(layer.index for layer in trainer.hooks.layers if layer.layer.gradient_checkpointing)
        tvaccine = {"layers_per_draw": sampler.layers_per_draw, "trainable_scope": config.trainable_scope,
                    "probe_batch_size": config.probe_batch_size, "selected_layers": sampler.selected,
                    "uncheckpointed_layers": kept, "checkpoint_mode": config.checkpoint_unselected,
                    "perturbation_interval": config.perturbation_interval,
                    # at the last step: the layers that ran checkpointed, of those neither drawn nor kept
                    "checkpointed_layers": checkpointed, "unselected_layers": layers - len(kept)}
    return {**job, "rho": getattr(config, "rho", None), "layers": layers, **tvaccine,
            **summarise_steps(meter.steps, meter.memory.keys), "memory_per_step": meter.memory.per_step,
            "loaded": loaded, "train_loss": train_loss, "wall_s": wall, "device": device.type,
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "cpu_model": cpu_model(), "precision": describe(settings.precision, device),
            "dtype": str(dtype).removeprefix("torch."), "threads": torch.get_num_threads(),
            "lora": {"r": lora.r, "alpha": lora.lora_alpha, "dropout": lora.lora_dropout},
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
    """Every job's result, in order. ``spawn=False`` runs them in this process (tests)."""
    from tvaccine.errors import UserError

    results = []
    context = multiprocessing.get_context("spawn")
    for job in settings.jobs():
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


def amortise(results: list[dict]) -> None:
    """Accelerated T-Vaccine's step, over one period of tau steps: one search step and tau - 1 plain
    ones (medians). The search step is this job's own when one fell in the timed steps, else the
    matching T-Vaccine job's (same S, scope and checkpointing, tau 1)."""
    for result in results:
        tau = result.get("perturbation_interval") or 1
        if result["method"] != "t-vaccine" or tau == 1 or "error" in result or result.get("plain_step_s") is None:
            continue
        search, source = result.get("search_step_s"), "this job"
        if search is None:
            same = ("layers_per_draw", "trainable_scope", "checkpoint_unselected")  # True == 1: compare types too
            twin = next((r for r in results if r["method"] == "t-vaccine" and "error" not in r
                         and (r.get("perturbation_interval") or 1) == 1
                         and all(repr(r.get(k)) == repr(result.get(k)) for k in same)), None)
            if twin is None:
                continue
            search, source = twin["median_step_s"], twin["label"]
        result["amortised"] = {"tau": tau, "search_step_s": search, "plain_step_s": result["plain_step_s"],
                               "search_step_from": source}
        result["median_step_s"] = (search + (tau - 1) * result["plain_step_s"]) / tau


def label(result: dict) -> str:
    name = {"sft": "SFT", "vaccine": "Vaccine", "t-vaccine": "T-Vaccine", "repnoise": "RepNoise", "tar": "TAR"}
    text = name[result["method"]]
    if result["method"] == "t-vaccine" and "layers" in result:
        text += f" S={result['layers_per_draw']}/{result['layers']}, {result['trainable_scope']} scope"
    mode = result.get("checkpoint_unselected")
    if mode is not None:  # asked for with --checkpoint-modes
        text += f", checkpoint {str(mode).lower()}"
    if (result.get("perturbation_interval") or 1) > 1:
        text += f", accelerated tau {result['perturbation_interval']} (non-paper)"
    if result.get("rho") is not None:
        text += f" (rho {result['rho']:g})"
    return text


def memory_keys(results: list[dict]) -> list[str]:
    return ["peak_allocated_bytes", "peak_reserved_bytes"] if any(r.get("device") == "cuda" for r in results) \
        else ["peak_rss_bytes"]


def add_ratios(results: list[dict]) -> None:
    """``ratios[metric][baseline]``: this job's median step / peak over the SFT / Vaccine job's."""
    baselines = {r["method"]: r for r in results if r["method"] in BASELINES and "error" not in r}
    for result in results:
        result["ratios"] = {}
        if "error" in result:
            continue
        for key in ["median_step_s", *memory_keys(results)]:
            result["ratios"][key] = {name: result[key] / baselines[name][key] if name in baselines else None
                                     for name in BASELINES}


def header(command: str, device: str, precision: str) -> str:
    """The first lines of every benchmark report: how to run it again and on what it ran."""
    from tvaccine.results_io import environment

    env = environment()
    try:
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
    except OSError:  # no git: the commit read from .git is all there is
        dirty = ""
    commit = (env["git_commit"] or "unknown")[:12] + (" with uncommitted changes" if dirty else "")
    return (f"```\n{command}\n```\n\ncommit {commit}; device {device}; precision {precision}; torch {env['torch']}; "
            f"transformers {env['transformers']}; peft {env['peft']}.\n")


TITLES = {"peak_allocated_bytes": "peak allocated", "peak_reserved_bytes": "peak reserved",
          "peak_rss_bytes": "peak RSS"}


def _ratio(result: dict, key: str, base: str) -> str:
    value = result["ratios"][key][base]
    return "–" if value is None else f"{value:.2f}"


def _spread(result: dict) -> str:
    """The timed steps' range and sd (of this job's own steps: for an amortised job, mostly plain ones)."""
    s = result["step_s"]
    sd = "" if s["sd"] is None else f", sd {s['sd']:.3f}"
    return ("own steps " if result.get("amortised") else "") + f"{s['min']:.3f}–{s['max']:.3f}{sd}"


def _failed(result: dict, columns: int) -> str:
    return f"| {result['label']} | failed: {result['error']} |" + " |" * (columns - 2)


def markdown(results: list[dict], command: str, settings: Settings) -> str:
    done = [r for r in results if "error" not in r]
    first = done[0] if done else {}
    keys = memory_keys(results)
    head = ["job", "step, median (s)", "min–max (s)", "/ SFT", "/ Vaccine"]
    for key in keys:
        head += [f"{TITLES[key]} (GiB)", "/ SFT", "/ Vaccine"]
    head += ["pass 1 (s)", "pass 2 (s)", "optimizer (s)", "probe, once (s)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        if "error" in r:
            lines.append(_failed(r, len(head)))
            continue
        cells = [r["label"], f"{r['median_step_s']:.3f}", _spread(r), _ratio(r, "median_step_s", "sft"),
                 _ratio(r, "median_step_s", "vaccine")]
        for key in keys:
            cells += [f"{r[key] / 2**30:.2f}", _ratio(r, key, "sft"), _ratio(r, key, "vaccine")]
        phases = r["phases"]
        two_pass = r["method"] in ("vaccine", "t-vaccine")
        cells += [f"{phases['pass1_s']:.3f}" if two_pass else "–", f"{phases['pass2_s']:.3f}",
                  f"{phases['optimizer_s']:.3f}",
                  f"{phases['probe_once_s']:.3f}" if r["method"] == "t-vaccine" else "–"]
        lines.append("| " + " | ".join(cells) + " |")
    model = f"shape {settings.shape} (random weights)" if settings.shape else f"model {settings.model}"
    lora = first.get("lora", {})
    if first.get("device") == "cuda":
        memory = "CUDA peak allocated (reserved) of each step, the peak reset at its start"
    elif first.get("memory_per_step"):
        memory = "each step's peak resident set (VmHWM, reset through /proc/self/clear_refs at its start)"
    else:
        memory = "the process's peak resident set so far (no per-step reset on this system)"
    notes = [f"{model}, {first.get('layers', '?')} layers, LoRA r={lora.get('r')}, alpha {lora.get('alpha')}, dropout "
             f"{lora.get('dropout')} on every projection; batch {settings.batch} x {settings.seq_len} tokens, the same "
             f"batch at every step; step 0 a warm-up, then {settings.steps} timed steps: the median, its range and "
             f"sd; ratios of medians to the jobs of this run"
             + (", the GPU synchronised at every phase boundary." if first.get("device") == "cuda" else "."),
             f"memory: {memory}; the largest over the timed steps.",
             "pass 2: training under the perturbation (for SFT, RepNoise, TAR: the whole forward and backward); "
             "optimizer: the rest of the step; probe: T-Vaccine's layer probe, in the warm-up step only."]
    drawn = {r["label"]: f"drawn {r['selected_layers']}, never checkpointed {r['uncheckpointed_layers']}"
             for r in done if r.get("selected_layers")}
    if len(set(drawn.values())) == 1:
        notes.append(f"T-Vaccine layers, every job: {next(iter(drawn.values()))}.")
    elif drawn:
        notes.append("T-Vaccine layers: " + "; ".join(f"{job}: {text}" for job, text in drawn.items()) + ".")
    if any(r.get("amortised") for r in done):
        notes.append("accelerated T-Vaccine: step amortised over tau steps, one search step (the same T-Vaccine job "
                     "at tau 1 unless one fell in the timed steps) and tau - 1 plain steps of its own (medians).")
    if not all(r.get("isolated") for r in results):
        notes.append("the jobs ran in one process.")
    device = first.get("device_name", "unknown")
    threads = f" ({first['cpu_model']}, torch threads: {first['threads']})" if first.get("device") == "cpu" else ""
    return (header(command, device + threads, first.get("precision", "?")) + f"\n{chr(10).join(lines)}\n\n"
            + "".join(f"- {n}\n" for n in notes) + checkpoint_table(results))


def checkpoint_table(results: list[dict]) -> str:
    """T-Vaccine against Vaccine, one row per T-Vaccine job: how many unselected layers ran
    checkpointed, and the step and peak that cost (when the run asked for checkpoint modes or tau)."""
    asked = [r for r in results if r.get("checkpoint_unselected") is not None
             or (r.get("perturbation_interval") or 1) > 1]
    if not asked:
        return ""
    key = memory_keys(results)[0]
    head = ["job", "checkpointed / unselected layers", "step, median (s)", "min–max (s)", "step / Vaccine",
            f"{TITLES[key]} (GiB)", "peak / Vaccine"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        if r["method"] not in ("vaccine", "t-vaccine"):
            continue
        if "error" in r:
            lines.append(_failed(r, len(head)))
            continue
        covered = f"{len(r['checkpointed_layers'])} / {r['unselected_layers']}" if r["method"] == "t-vaccine" else "–"
        lines.append("| " + " | ".join([r["label"], covered, f"{r['median_step_s']:.3f}", _spread(r),
                                        _ratio(r, "median_step_s", "vaccine"), f"{r[key] / 2**30:.2f}",
                                        _ratio(r, key, "vaccine")]) + " |")
    return ("\n## T-Vaccine by checkpointed layers\n\n" + "\n".join(lines) + "\n\n"
            "- checkpointed / unselected: of the layers neither drawn nor kept next to a drawn one, how many ran "
            "checkpointed in the last step (`checkpoint_unselected` k checkpoints the k farthest from the drawn "
            "layers). The fastest row whose peak fits your memory is the setting to use.\n")


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
    parser.add_argument("--steps", type=int, default=10, help="timed optimizer steps, after one warm-up step")
    parser.add_argument("--precision", default="auto", choices=PRECISIONS,
                        help="as alignment runs: auto (bf16 on a GPU and on a CPU with native bf16, as autocast over "
                             "fp32 weights on a CPU; else fp32), fp32 or bf16")
    parser.add_argument("--cpu", action="store_true", help="run on CPU even when a GPU is present")
    parser.add_argument("--methods", default=",".join(METHOD_ORDER))
    parser.add_argument("--layers-per-draw", default="", help="T-Vaccine's S values, e.g. 4,8,16: one run each "
                                                              "(default: the project's default S)")
    parser.add_argument("--trainable-scopes", default="", help=f"T-Vaccine's trainable scopes, one run each: "
                                                               f"{', '.join(TRAINABLE_SCOPES)} (default: the "
                                                               "project's default)")
    parser.add_argument("--checkpoint-modes", default="", help="T-Vaccine's checkpoint_unselected values, one run "
                                                               "each: true, false or a number of unselected layers "
                                                               "run checkpointed, e.g. true,false,0,4,8")
    parser.add_argument("--perturbation-intervals", default="", help="Accelerated T-Vaccine's tau values (>= 2), one "
                                                                     "run each, e.g. 10")
    parser.add_argument("--out", help="output folder (default: docs/results/step_cost/<shape or model>_<device>)")
    args = parser.parse_args(argv)

    from tvaccine.errors import UserError
    from tvaccine.models import DEFAULT_MODEL

    command = "python " + shlex.join(["benchmarks/step_cost.py", *(sys.argv[1:] if argv is None else argv)])
    try:
        settings = Settings(shape=args.shape, model=None if args.shape else args.model or DEFAULT_MODEL,
                            batch=args.batch, seq_len=args.seq_len, steps=args.steps, precision=args.precision,
                            cpu=args.cpu, methods=parse_list(args.methods),
                            layers_per_draw=parse_list(args.layers_per_draw, int),
                            trainable_scopes=parse_list(args.trainable_scopes),
                            checkpoint_modes=parse_list(args.checkpoint_modes, checkpoint_mode),
                            perturbation_intervals=parse_list(args.perturbation_intervals, int))
        settings.validate()
        print(command, file=sys.stderr)
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
