"""T-Vaccine (Liu et al., 2024): Vaccine on a few safety-critical layers at a time.

Every K optimizer steps a probe on harmful data re-estimates which layers matter for safety
(p_l from the harmful-gradient norms); every J steps S layers are drawn from p. Between draws only
those S layers are perturbed (the norm taken over them), and every other decoder layer runs under
activation checkpointing: their activations are not stored, which is where the memory saving comes
from. Which LoRA weights train between draws is ``trainable_scope``: the authors' code and the
paper's text disagree, see ``TRAINABLE_SCOPES``.

``checkpoint_unselected: auto`` checkpoints only as many of the other layers as a memory budget
needs (``layer_selection.CheckpointPlanner``): every checkpointed layer is recomputed in the
backward of both passes, so each one left out saves time. ``perturbation_interval`` > 1 is
Accelerated T-Vaccine, a non-paper variant: Vaccine's Algorithm 2 schedule (a new perturbation
every tau optimizer steps, plain steps in between) applied to T-Vaccine; the plain steps train the
current draw's scope under its checkpointing. Neither reference repository has it
(Lslland/T-Vaccine trainer.py, BaseTrainer.training_step runs both passes every step).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader

from tvaccine.layer_selection import (
    CheckpointPlanner,
    LayerMode,
    LayerSampler,
    ProbeStream,
    layer_probabilities,
    probe_harmful_gradient_norms,
)
from tvaccine.methods.base import peak_memory_bytes, require
from tvaccine.methods.vaccine import VaccineConfig, VaccineTrainer

# Which LoRA weights train between two draws.
# - "reference": what the code behind the paper's numbers trains (Lslland/T-Vaccine, trainer.py,
#   BaseTrainer.unfreeze_activate_layers + get_leaf_modules_with_grad). It toggles requires_grad only
#   inside the attention modules, so the attention LoRA trains in the S drawn layers alone while the
#   MLP LoRA stays trainable everywhere; its reentrant checkpointing (models/modeling_llama_my.py,
#   the decoder loop) then gives no gradient to checkpointed layers below the lowest uncheckpointed
#   one. Net effect: attention LoRA of the S layers + every other LoRA from the lowest one upwards.
# - "drawn": the paper's text ("keeping other layers frozen"): all LoRA outside the S layers frozen.
# Default "reference": it is what produced the published numbers, and on the default model it is
# the scope that aligns (docs/reference.md).
TRAINABLE_SCOPES = ("reference", "drawn")
# The reference also leaves layer i-1 uncheckpointed next to every drawn layer i, for models deeper
# than this (trainer.py, BaseTrainer.training_step, the `activate_layers` list).
REFERENCE_DEEP_MODEL_LAYERS = 26
CHECKPOINT_MODES = (True, False, "auto")
# The default budget of `auto`: the device's memory less this share (allocator slack, other processes).
MEMORY_MARGIN = 0.1
# Config fields that switch on dropout outside nn.Dropout modules (functional dropout in attention).
_DROPOUT_FIELD = re.compile(r"dropout|pdrop", re.IGNORECASE)
_UNUSED_DROPOUT_FIELD = re.compile(r"summary|classifier", re.IGNORECASE)

logger = logging.getLogger(__name__)


@dataclass
class TVaccineConfig(VaccineConfig):
    """T-Vaccine's knobs in the paper's symbols: S (``layers_per_draw``), J and K.

    ```python
    from tvaccine import TVaccineConfig

    args = TVaccineConfig(output_dir="runs/tv", rho=3.0, layers_per_draw=8, resample_every=20, probe_every=200)
    ```
    """

    rho: float = field(default=3.0, metadata={"help": "Perturbation budget over the S perturbed layers "
                                                       "(T-Vaccine paper default 3)."})
    layers_per_draw: int | None = field(default=None, metadata={
        "help": "S, the number of layers perturbed at a time (paper: 8 of 32). Default: 8, or a quarter "
                "of the depth for models with fewer than 32 layers."})
    resample_every: int = field(default=20, metadata={"help": "J: draw new layers every J optimizer steps."})
    probe_every: int = field(default=200, metadata={"help": "K: re-probe layer importance every K steps."})
    probe_samples: int = field(default=200, metadata={
        "help": "Pool of harmful samples the probes draw from (reference: prompt_data_size = 200)."})
    probe_batch_size: int = field(default=1, metadata={
        "help": "Harmful samples in one probe, drawn without replacement from the pool, epoch after epoch "
                "(reference: 1). Larger values average the norms over more samples."})
    trainable_scope: str = field(default="reference", metadata={
        "help": "Which LoRA trains between draws: 'reference' (the authors' code: attention LoRA of the S "
                "layers, other LoRA from the lowest uncheckpointed layer up) or 'drawn' (the paper's text: only "
                "the S layers' LoRA)."})
    probability_temperature: float = field(default=1.0, metadata={
        "help": "1 = the paper's p_l = s_l/sum(s). Other values use s_l^(1/T) (a non-paper variant)."})
    exclude_layers: list[int] = field(default_factory=list, metadata={
        "help": "Layers never drawn (probability 0), e.g. [0], the embedding-adjacent layer the probe "
                "favours on small models. Empty = the paper's method; anything else is a non-paper variant."})
    checkpoint_unselected: bool | str = field(default=True, metadata={
        "help": "Which layers outside the S run under activation checkpointing (the memory saving): true (all), "
                "false (none) or auto (the fewest that keep a step inside memory_budget_gib)."})
    memory_budget_gib: float | None = field(default=None, metadata={
        "help": "With checkpoint_unselected auto: the peak a step may reach, in GiB (CUDA peak allocated on a GPU, "
                "the process's peak resident set on CPU). Default: the device's memory less a tenth."})
    perturbation_interval: int = field(default=1, metadata={
        "help": "Accelerated T-Vaccine's tau (a non-paper variant): search a new perturbation only on every tau-th "
                "optimizer step, plain steps of the current draw in between. 1 = T-Vaccine."})

    def __post_init__(self):
        # The trainable layers change every J steps: under DDP the frozen ones are "unused".
        if self.ddp_find_unused_parameters is None:
            self.ddp_find_unused_parameters = True
        super().__post_init__()
        require(self.layers_per_draw is None or self.layers_per_draw >= 1,
                f"S (layers per draw) must be >= 1, got {self.layers_per_draw}")
        require(self.resample_every >= 1, f"J (resample every) must be >= 1, got {self.resample_every}")
        require(self.probe_every >= 1, f"K (probe every) must be >= 1, got {self.probe_every}")
        require(self.probe_samples >= 1, f"probe samples must be >= 1, got {self.probe_samples}")
        require(self.probe_batch_size >= 1, f"probe batch size must be >= 1, got {self.probe_batch_size}")
        require(self.trainable_scope in TRAINABLE_SCOPES,
                f"trainable scope must be one of {', '.join(TRAINABLE_SCOPES)}, got {self.trainable_scope!r}")
        require(self.probability_temperature > 0, "probability temperature must be > 0")
        require(isinstance(self.exclude_layers, (list, tuple)) and
                all(isinstance(i, int) and i >= 0 for i in self.exclude_layers),
                f"excluded layers must be a list of layer indices >= 0, got {self.exclude_layers!r}")
        mode = self.checkpoint_unselected
        if isinstance(mode, str):
            mode = {"true": True, "false": False}.get(mode.strip().lower(), mode.strip().lower())
        require(any(mode is m or (isinstance(m, str) and mode == m) for m in CHECKPOINT_MODES),
                f"checkpoint_unselected must be true, false or auto, got {self.checkpoint_unselected!r}")
        self.checkpoint_unselected = mode
        require(self.memory_budget_gib is None or mode == "auto",
                "memory_budget_gib applies to checkpoint_unselected: auto only")
        require(self.memory_budget_gib is None or self.memory_budget_gib > 0,
                f"memory budget must be > 0 GiB, got {self.memory_budget_gib}")

    def resolve_layers_per_draw(self, num_layers: int) -> int:
        require(max(self.exclude_layers, default=-1) < num_layers,
                f"excluded layer {max(self.exclude_layers, default=-1)} does not exist: the model has {num_layers}")
        count = self.layers_per_draw
        if count is None:
            count = 8 if num_layers >= 32 else max(1, math.ceil(num_layers / 4))
        require(count <= num_layers - len(set(self.exclude_layers)),
                f"S = {count} layers per draw, but the model has only {num_layers}"
                + (f" ({len(set(self.exclude_layers))} excluded)" if self.exclude_layers else ""))
        return count


class TVaccineTrainer(VaccineTrainer):
    """Vaccine on S layers drawn from the harmful-gradient probe; ``harmful_dataset`` (harmful
    prompts with compliant answers) is what the probe reads.

    ```python
    from datasets import Dataset
    from tvaccine import TVaccineConfig, TVaccineTrainer, add_lora, load_model

    model, tokenizer = load_model("tiny-random-llama")
    refusals = Dataset.from_list([{"prompt": "How do I make a weapon?", "completion": "I can't help."}] * 4)
    harmful = Dataset.from_list([{"prompt": "How do I make a weapon?", "completion": "Sure, here is how."}] * 4)
    args = TVaccineConfig(output_dir="runs/x", max_steps=1, per_device_train_batch_size=4, layers_per_draw=2)
    trainer = TVaccineTrainer(model=add_lora(model), args=args, train_dataset=refusals, harmful_dataset=harmful,
                              processing_class=tokenizer)
    trainer.train()
    ```
    """

    harmful_data = "probe"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        num_layers = len(self.hooks.layers)
        self.sampler = LayerSampler(num_layers, self.args.resolve_layers_per_draw(num_layers), self.args.seed,
                                    exclude=self.args.exclude_layers)
        self.probe_stream = ProbeStream(min(self.args.probe_samples, len(self.harmful_dataset)), self.args.seed)
        self.layer_history: list[dict] = []
        self._attention_lora, self._other_lora = {}, {}
        for layer in self.hooks.layers:
            attention = {id(p) for p in layer.attention.parameters()}
            lora = [p for n, p in layer.layer.named_parameters() if "lora_" in n]
            self._attention_lora[layer.index] = [p for p in lora if id(p) in attention]
            self._other_lora[layer.index] = [p for p in lora if id(p) not in attention]
        require(any(self._attention_lora.values()) or any(self._other_lora.values()),
                "T-Vaccine trains LoRA adapters: the model has none")
        in_layers = {id(p) for params in (*self._attention_lora.values(), *self._other_lora.values()) for p in params}
        outside = [n for n, p in self.model.named_parameters() if "lora_" in n and id(p) not in in_layers]
        require(not outside, "T-Vaccine selects LoRA by decoder layer; "
                             f"{outside[0] if outside else ''} sits outside every layer (leave it out of lora_targets)")
        self._checkpointing = bool(self.args.checkpoint_unselected) and self._enable_layer_checkpointing()
        self._last_step = None
        self.planner = None
        if self._checkpointing and self.args.checkpoint_unselected == "auto":
            self.planner = CheckpointPlanner(num_layers, self._attention_lora, self._other_lora,
                                             default_budget_bytes(self.args.device, self.args.memory_budget_gib))
        self._plan = None  # the CheckpointPlan of the current draw (pass 2), and its history event
        self._pass1_plan = None
        self._plan_event = None
        self._dropout_below = self._dropout_layers()

    def _enable_layer_checkpointing(self) -> bool:
        """Turn on transformers' per-layer activation checkpointing (non-reentrant, so the backward
        still stops at the lowest trainable layer), then switch it per layer in ``_select``."""
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        if not getattr(base, "supports_gradient_checkpointing", False):
            return False
        enable = getattr(base, "activation_checkpointing_enable", None)
        if enable is not None:
            enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:  # transformers < 5
            base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        # Enabling checkpointing makes the embedding output require grad (needed only by reentrant
        # checkpointing); left on, every backward would run down to the embeddings.
        base.disable_input_require_grads()
        supported = all(hasattr(layer.layer, "gradient_checkpointing") for layer in self.hooks.layers)
        if not supported:
            base.gradient_checkpointing_disable()
        return supported

    def perturbed_layers(self) -> list[int]:
        return self.sampler.selected

    def layer_modes(self, selected: list[int]) -> tuple[dict[int, tuple[bool, bool]], set[int]]:
        """For a draw: per layer (attention LoRA trains, other LoRA trains), and the layers that run
        without checkpointing."""
        selected = set(selected)
        count = len(self.hooks.layers)
        if self.args.trainable_scope == "drawn":
            return {i: (i in selected, i in selected) for i in range(count)}, selected
        uncheckpointed = set(selected)
        if count > REFERENCE_DEEP_MODEL_LAYERS:
            uncheckpointed |= {i - 1 for i in selected if i > 0}
        lowest = min(uncheckpointed)
        return {i: (i in selected, i >= lowest) for i in range(count)}, uncheckpointed

    def pass2_modes(self, selected: list[int]) -> dict[int, LayerMode]:
        """Per layer, what pass 2 of this draw records: which of its LoRA trains, whether its input
        carries a gradient, and whether it must stay uncheckpointed."""
        trainable, uncheckpointed = self.layer_modes(selected)
        modes, below = {}, False
        for index in range(len(self.hooks.layers)):
            attention = trainable[index][0] and bool(self._attention_lora[index])
            other = trainable[index][1] and bool(self._other_lora[index])
            modes[index] = LayerMode(attention, other, below, index in uncheckpointed)
            below = below or attention or other
        return modes

    def pass1_modes(self, selected: list[int]) -> dict[int, LayerMode]:
        """The same for the lean pass 1: no LoRA trains, and the graph starts inside the lowest drawn
        layer (counted whole, an overestimate), so each layer records less than in pass 2 and fewer
        need checkpointing."""
        uncheckpointed = self.layer_modes(selected)[1]
        return {i: LayerMode(False, False, i >= min(selected), i in uncheckpointed)
                for i in range(len(self.hooks.layers))}

    def _apply_modes(self, trainable: dict[int, tuple[bool, bool]], checkpointed: set[int]) -> None:
        for index, (attention, other) in trainable.items():
            for param in self._attention_lora[index]:
                param.requires_grad_(attention)
            for param in self._other_lora[index]:
                param.requires_grad_(other)
        if self._checkpointing:
            for layer in self.hooks.layers:
                layer.layer.gradient_checkpointing = layer.index in checkpointed

    def probe(self, model) -> None:
        """s_l on the next ``probe_batch_size`` samples of the pool (reference: trainer.py,
        BaseTrainer.training_step with get_dataloader's RandomSampler at batch size 1)."""
        everything = set(range(len(self.hooks.layers)))
        # Every layer's attention output must carry a gradient; checkpoint all of them so the probe
        # costs no more memory than a T-Vaccine step. autograd.grad writes no parameter gradient.
        self._apply_modes({i: (True, True) for i in everything}, checkpointed=everything)
        indices = self.probe_stream.next(self.args.probe_batch_size)
        loader = DataLoader(torch.utils.data.Subset(self.harmful_dataset, indices),
                            batch_size=self.args.per_device_train_batch_size, collate_fn=self.data_collator)
        model.train()
        with self.accelerator.no_sync(model):
            norms = probe_harmful_gradient_norms(self.hooks, loader, lambda batch: self._loss(model, batch))
        self.sampler.probabilities = layer_probabilities(norms, self.args.probability_temperature,
                                                         exclude=self.args.exclude_layers)
        self.layer_history.append({"step": self.state.global_step, "event": "probe", "samples": indices,
                                   "norms": norms.tolist(), "probabilities": self.sampler.probabilities.tolist()})

    def _maybe_update_selection(self, model) -> None:
        step = self.state.global_step
        if step == self._last_step:  # later micro-batches of the same optimizer step
            return
        self._last_step = step
        if step % self.args.probe_every == 0:
            self.probe(model)
        if step % self.args.resample_every == 0 or not self.sampler.selected:
            selected = self.sampler.draw()
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                # Ranks draw identically from identical probes; rank 0's draw is broadcast anyway, so
                # that a non-deterministic GPU kernel can never make ranks train different layers.
                shared = [selected]
                torch.distributed.broadcast_object_list(shared, src=0)
                selected = self.sampler.selected = shared[0]
            self.layer_history.append({"step": step, "event": "draw", "selected": selected})
            self._plan = None  # re-planned at every draw
        trainable, uncheckpointed = self.layer_modes(self.sampler.selected)
        self._apply_modes(trainable, checkpointed=set(range(len(self.hooks.layers))) - uncheckpointed)

    def _plan_checkpointing(self, inputs) -> None:
        """``auto``: the first step runs as ``true`` and is measured; from then on each draw (and any
        batch with more tokens than planned for, or a step that went past its estimate) is planned."""
        tokens = int(inputs["input_ids"].numel())
        if not self.planner.calibrated:
            return
        plan = self._plan
        if plan is None or tokens > plan.tokens:
            selected = self.sampler.selected
            plans = []
            for modes in (self.pass2_modes(selected), self.pass1_modes(selected) if self.lean_pass1 else None):
                if modes is not None:
                    self.planner.measure(self.hooks.layers, modes, self.compute_loss_context_manager)
                    plans.append(self.planner.plan(modes, tokens))
            plan, self._pass1_plan = plans[0], (plans[1] if len(plans) > 1 else None)
            # The step's peak is the larger of its two passes'.
            plan.estimated_peak_bytes = max(p.estimated_peak_bytes for p in plans)
            plan.fits = all(p.fits for p in plans)
            self._plan = plan
            self._plan_event = {"step": self.state.global_step, "event": "checkpoint_plan", "selected": list(selected),
                                "checkpointed": plan.checkpointed,
                                "pass1_checkpointed": (self._pass1_plan or plan).checkpointed,
                                "estimated_peak_bytes": plan.estimated_peak_bytes, "budget_bytes": plan.budget_bytes,
                                "fits": plan.fits, "tokens": tokens}
            self.layer_history.append(self._plan_event)
            unselected = len(self.hooks.layers) - len(self.layer_modes(selected)[1])
            message = (f"T-Vaccine step {self.state.global_step}: checkpointing {len(plan.checkpointed)} of "
                       f"{unselected} unselected layers {plan.checkpointed} (pass 1: "
                       f"{len((self._pass1_plan or plan).checkpointed)}), estimated peak "
                       f"{plan.estimated_peak_bytes / 2**30:.2f} GiB, budget {plan.budget_bytes / 2**30:.2f} GiB")
            if plan.fits:
                logger.info(message)
            else:
                logger.warning(message + ": the budget cannot be met, every unselected layer is checkpointed")
        if self._checkpointing:
            for layer in self.hooks.layers:
                layer.layer.gradient_checkpointing = layer.index in plan.checkpointed

    def search_perturbation(self, model, inputs, num_items_in_batch=None) -> None:
        """Pass 1 under its own checkpoint plan (``auto``): it records less than pass 2."""
        plan = self._pass1_plan if self.planner is not None and self._plan is not None else None
        if plan is None or not self._checkpointing:
            return super().search_perturbation(model, inputs, num_items_in_batch)
        saved = {layer.index: layer.layer.gradient_checkpointing for layer in self.hooks.layers}
        for layer in self.hooks.layers:
            layer.layer.gradient_checkpointing = layer.index in plan.checkpointed
        try:
            return super().search_perturbation(model, inputs, num_items_in_batch)
        finally:
            for layer in self.hooks.layers:
                layer.layer.gradient_checkpointing = saved[layer.index]

    def _measured_step(self, model, inputs, num_items_in_batch):
        """One micro-batch under ``auto``, its peak measured: the first one calibrates the planner."""
        tokens = int(inputs["input_ids"].numel())
        base, before = current_memory_bytes(self.args.device), self.measured_peak_bytes()
        calibrating = not self.planner.calibrated
        context = self.planner.record_inputs(self.hooks.layers, tokens) if calibrating else contextlib.nullcontext()
        with context:
            loss = super().training_step(model, inputs, num_items_in_batch)
        peak = self.measured_peak_bytes()
        # A high-water mark: exact when this step raised it, an upper bound otherwise.
        raised = peak > before
        if calibrating:
            modes = self.pass2_modes(self.sampler.selected)
            self.planner.measure(self.hooks.layers, modes, self.compute_loss_context_manager)
            checkpointed = {layer.index for layer in self.hooks.layers if layer.layer.gradient_checkpointing}
            self.planner.calibrate(modes, checkpointed, tokens, base, peak)
            estimate = self.planner.estimate(modes, checkpointed, tokens)
            self.layer_history.append({"step": self.state.global_step, "event": "checkpoint_plan", "calibration": True,
                                       "selected": list(self.sampler.selected), "checkpointed": sorted(checkpointed),
                                       "estimated_peak_bytes": estimate, "budget_bytes": self.planner.budget_bytes,
                                       "tokens": tokens, "measured_peak_bytes": peak, "measured_in_step": raised})
        elif self._plan is not None:
            estimate = self._plan.estimated_peak_bytes
            if self._plan_event.get("measured_peak_bytes") is None:
                self._plan_event.update(measured_peak_bytes=peak, measured_in_step=raised)
                logger.info(f"T-Vaccine step {self.state.global_step}: measured peak {peak / 2**30:.2f} GiB"
                            + ("" if raised else " (the run's high-water mark; this step stayed below it)"))
            if raised and self.planner.correct(estimate, peak, tokens):
                self._plan = None  # re-plan with the corrected estimate
        else:
            estimate = None
        if estimate is not None:
            self.record_metric("estimated_peak_gib", estimate / 2**30)
        self.record_metric("measured_peak_gib", peak / 2**30)
        self.record_metric("checkpointed_layers", sum(bool(layer.layer.gradient_checkpointing)
                                                      for layer in self.hooks.layers))
        return loss

    def measured_peak_bytes(self) -> int:
        """What the budget is about: the peak so far (see ``base.peak_memory_bytes``)."""
        return peak_memory_bytes(self.args.device)

    def _dropout_layers(self) -> set[int] | None:
        """Decoder layers that run dropout in training; None when dropout runs outside them too (the
        embeddings, or attention dropout set in the config), so that no layer's output is repeatable."""
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        config = getattr(base, "config", None)
        fields = config.to_dict() if config is not None else {}
        if any(_DROPOUT_FIELD.search(k) and not _UNUSED_DROPOUT_FIELD.search(k) and isinstance(v, (int, float))
               and not isinstance(v, bool) and v > 0 for k, v in fields.items()):
            return None
        active = {id(m) for m in self.model.modules() if isinstance(m, torch.nn.Dropout) and m.p > 0}
        inside = {layer.index for layer in self.hooks.layers if any(id(m) in active for m in layer.layer.modules())}
        in_layers = {id(m) for layer in self.hooks.layers for m in layer.layer.modules()}
        return None if active - in_layers else inside

    def reusable_lower_layers(self, inputs) -> int:
        """k > 0 when pass 2 may start from pass 1's hidden state entering layer k: nothing below k is
        trainable or perturbed (the `drawn` scope, or the reference scope below the lowest uncheckpointed
        layer), and nothing below k runs dropout, so both passes compute the same values there. The
        reference recomputes them (Lslland/T-Vaccine trainer.py, BaseTrainer.training_step calls
        ``step(inputs, model)`` twice on the whole model)."""
        if self._dropout_below is None or inputs.get("output_hidden_states") or inputs.get("output_attentions"):
            return 0
        trains = [i for i in range(len(self.hooks.layers))
                  if any(p.requires_grad for p in (*self._attention_lora[i], *self._other_lora[i]))]
        start = min([*self.perturbed_layers(), *trains])
        if start == 0 or any(i < start for i in self._dropout_below):
            return 0
        above = {id(p) for layer in self.hooks.layers[start:] for p in layer.layer.parameters()}
        if any(p.requires_grad and id(p) not in above for p in self.model.parameters()):
            return 0
        return start

    def method_state(self) -> dict:
        return {**super().method_state(), "sampler": self.sampler.state_dict(),
                "probe_stream": self.probe_stream.state_dict(), "history": self.layer_history}

    def load_method_state(self, state: dict) -> None:
        super().load_method_state(state)
        self.sampler.load_state_dict(state["sampler"])
        self.probe_stream.load_state_dict(state["probe_stream"])
        self.layer_history = list(state["history"])
        # Resuming inside a draw: re-apply that draw's trainable / checkpointed layers.
        self._last_step = None

    def training_step(self, model, inputs, num_items_in_batch=None):
        self._maybe_update_selection(model)
        if self.planner is None:
            return super().training_step(model, inputs, num_items_in_batch)
        self._plan_checkpointing(inputs)
        return self._measured_step(model, inputs, num_items_in_batch)


def current_memory_bytes(device: torch.device) -> int:
    """Memory held now: CUDA allocated on a GPU, the resident set on CPU (Linux; else the peak so far)."""
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device)
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return peak_memory_bytes(device)


def default_budget_bytes(device: torch.device, budget_gib: float | None) -> int:
    """The budget asked for, or the device's memory (the machine's on CPU) less ``MEMORY_MARGIN``."""
    if budget_gib is not None:
        return int(budget_gib * 2**30)
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
    else:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return int(total * (1 - MEMORY_MARGIN))
