"""T-Vaccine (Liu et al., 2024): Vaccine on a few safety-critical layers at a time.

Every K optimizer steps a probe on harmful data re-estimates which layers matter for safety
(p_l from the harmful-gradient norms); every J steps S layers are drawn from p. Between draws only
those S layers are perturbed (the norm taken over them), and the other decoder layers run under
activation checkpointing: their activations are not stored, which is where the memory saving comes
from. ``checkpoint_unselected`` says how many of them: all (as the reference code), none, or a
count k; each checkpointed layer is recomputed in the backward of both passes, so fewer is faster
and needs more memory. Which LoRA weights train between draws is ``trainable_scope``: the authors'
code and the paper's text disagree, see ``TRAINABLE_SCOPES``.

``perturbation_interval`` > 1 is Accelerated T-Vaccine, a non-paper variant: Vaccine's Algorithm 2
schedule (a new perturbation every tau optimizer steps, plain steps in between) applied to
T-Vaccine; the plain steps train the current draw's scope under its checkpointing. Neither
reference repository has it (Lslland/T-Vaccine trainer.py, BaseTrainer.training_step runs both
passes every step).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader

from tvaccine.layer_selection import LayerSampler, ProbeStream, layer_probabilities, probe_harmful_gradient_norms
from tvaccine.methods.base import require
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
    # int before bool: a YAML or command-line 1 is one layer, not true.
    checkpoint_unselected: int | bool = field(default=True, metadata={
        "help": "Layers outside the S that run under activation checkpointing (less memory; each one is recomputed "
                "in the backward of both passes): true (all of them, as the reference code), false (none), or a "
                "count k: the k farthest from the drawn layers, so the kept ones are the nearest.",
        "metavar": "true|false|K"})
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
        require(isinstance(self.checkpoint_unselected, int) and self.checkpoint_unselected >= 0,
                f"checkpoint_unselected must be true, false or a number of layers >= 0, "
                f"got {self.checkpoint_unselected!r}")

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

    def _enable_layer_checkpointing(self) -> bool:
        """Turn on transformers' per-layer activation checkpointing (non-reentrant, so the backward
        still stops at the lowest trainable layer), then switch it per layer in ``_apply_modes``."""
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
        """For a draw: per layer (attention LoRA trains, other LoRA trains), and the layers that never
        run checkpointed (the drawn ones, and their reference neighbours in deep models)."""
        selected = set(selected)
        count = len(self.hooks.layers)
        if self.args.trainable_scope == "drawn":
            return {i: (i in selected, i in selected) for i in range(count)}, selected
        uncheckpointed = set(selected)
        if count > REFERENCE_DEEP_MODEL_LAYERS:
            uncheckpointed |= {i - 1 for i in selected if i > 0}
        lowest = min(uncheckpointed)
        return {i: (i in selected, i >= lowest) for i in range(count)}, uncheckpointed

    def checkpointed_layers(self, kept: set[int]) -> set[int]:
        """The layers outside ``kept`` (the drawn ones and their reference neighbours) that run
        checkpointed: every one for true, as in the reference (models/modeling_llama_my_new.py,
        LlamaModel.forward checkpoints each layer outside ``activate_layers``); none for false; for a
        count k, the k farthest from a drawn layer, so that the nearest keep their activations. On a tie
        the lower layer is checkpointed first: below the lowest trainable layer nothing is recorded."""
        unselected = [i for i in range(len(self.hooks.layers)) if i not in kept]
        count = self.args.checkpoint_unselected
        if count is True:
            return set(unselected)
        drawn = self.sampler.selected
        farthest_first = sorted(unselected, key=lambda i: (-min(abs(i - d) for d in drawn), i))
        return set(farthest_first[:count])

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
        trainable, kept = self.layer_modes(self.sampler.selected)
        self._apply_modes(trainable, checkpointed=self.checkpointed_layers(kept))

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
        return super().training_step(model, inputs, num_items_in_batch)
