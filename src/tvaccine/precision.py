"""The compute precision of a run: ``auto`` takes bf16 where the hardware computes it natively.

On a GPU bf16 means bf16 weights, as before. On a CPU with native bf16 (AVX512-BF16 or AMX) it means
fp32 weights under bf16 autocast: measured on the default model (``benchmarks/precision_cpu.py``,
docs/results/precision_cpu), autocast gave most of the speed of bf16 weights while the LoRA weights
and AdamW's state stay fp32, so the training loss follows fp32's. A CPU without native bf16
emulates it, slower than fp32, so ``auto`` keeps fp32 there.
"""

from __future__ import annotations

import contextlib

import torch

from tvaccine.errors import UserError

PRECISIONS = ("auto", "fp32", "bf16")


def cpu_has_native_bf16() -> bool:
    """True on a CPU with AVX512-BF16 or AMX tiles (torch's own CPU feature probes)."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)


def resolve_precision(precision: str, device: str | torch.device) -> str:
    """``fp32`` or ``bf16`` for this device."""
    if precision not in PRECISIONS:
        raise UserError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision
    device = torch.device(device)
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        return "bf16" if cpu_has_native_bf16() else "fp32"
    return "fp32"


def weights_dtype(precision: str, device: str | torch.device) -> str:
    """The dtype the weights are loaded in: bf16 on a GPU under bf16, fp32 everywhere else (a CPU runs
    bf16 as autocast over fp32 weights)."""
    resolved = resolve_precision(precision, device)
    return "bf16" if resolved == "bf16" and torch.device(device).type == "cuda" else "fp32"


def uses_autocast(precision: str, device: str | torch.device) -> bool:
    """True where bf16 runs as autocast over fp32 weights (a CPU under bf16)."""
    device = torch.device(device)
    return device.type == "cpu" and resolve_precision(precision, device) == "bf16"


def autocast(precision: str, device: str | torch.device):
    """The context for forward passes outside the Trainer (generation, the forward-only metrics)."""
    if uses_autocast(precision, device):
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def describe(precision: str, device: str | torch.device) -> str:
    """What a result table prints: ``bf16 (autocast, fp32 weights)``, ``bf16``, ``fp32``."""
    resolved = resolve_precision(precision, device)
    return "bf16 (autocast, fp32 weights)" if uses_autocast(precision, device) else resolved


def training_device(train: dict) -> str:
    """Where a Trainer built from ``train`` runs: the CPU when asked (``use_cpu``) or when no GPU exists."""
    use_cpu = train.get("use_cpu") in (True, "true", "True", 1)
    return "cpu" if use_cpu or not torch.cuda.is_available() else "cuda"


def train_with_precision(precision: str, train: dict) -> dict:
    """``train`` with the TrainingArguments fields the precision sets: ``bf16`` and ``use_cpu`` (which the
    Trainer asks for before it autocasts on a CPU) where bf16 runs as autocast; unchanged elsewhere."""
    if train.get("bf16") or train.get("fp16"):
        raise UserError("train.bf16 / train.fp16: set precision instead (auto, fp32 or bf16)")
    if not uses_autocast(precision, training_device(train)):
        return dict(train)
    return {**train, "bf16": True, "use_cpu": True}


class SpecPrecision:
    """What a spec with ``precision``, ``dtype`` and ``train`` fields (an align or attack spec) runs in."""

    @property
    def weights_dtype(self) -> str:
        return self.dtype or weights_dtype(self.precision, training_device(self.train))

    @property
    def precision_used(self) -> str:
        return describe(self.precision, training_device(self.train))
