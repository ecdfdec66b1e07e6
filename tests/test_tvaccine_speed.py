"""T-Vaccine's cost knobs: ``checkpoint_unselected`` (true, false or a count k of unselected layers
run checkpointed, the farthest from the drawn layers) and Accelerated T-Vaccine. Checkpointing
changes what is stored and recomputed, never the update; tau changes only which steps search."""

import pytest
import torch

from test_methods import _lora_b_nonzero, lora_model, lora_state, make_trainer
from tiny_models import tiny_model
from tvaccine.errors import UserError
from tvaccine.methods import METHODS
from tvaccine.models import add_lora


def dropout_model(layers=8):
    """The default LoRA dropout (0.1): a checkpointed layer's recompute must redraw the same masks."""
    return _lora_b_nonzero(add_lora(tiny_model(layers=layers), dropout=0.1))


def distance(layer, drawn):
    return min(abs(layer - d) for d in drawn)


def traced_trainer(tmp_path, mode, layers=8, steps=5):
    """A T-Vaccine trainer that records, per optimizer step and phase (probe, pass 1, pass 2), the
    layers that went through transformers' checkpointing function, and the draw of that step."""
    trainer = make_trainer("t-vaccine", tmp_path, model=dropout_model(layers), steps=steps, rho=2.0, layers_per_draw=2,
                           resample_every=2, probe_every=3, checkpoint_unselected=mode)
    calls, phase = [], ["pass 2"]
    for layer in trainer.hooks.layers:
        inner = getattr(layer.layer, "_gradient_checkpointing_func", None)
        if inner is not None:
            def counted(function, *args, index=layer.index, inner=inner, **kwargs):
                calls.append((trainer.state.global_step, phase[0], index))
                return inner(function, *args, **kwargs)
            layer.layer._gradient_checkpointing_func = counted
    for name in ("probe", "search_perturbation"):
        def in_phase(*args, name=name, inner=getattr(trainer, name), **kwargs):
            phase[0] = {"probe": "probe", "search_perturbation": "pass 1"}[name]
            try:
                return inner(*args, **kwargs)
            finally:
                phase[0] = "pass 2"
        setattr(trainer, name, in_phase)
    draws, step = {}, trainer.training_step

    def recorded(model, inputs, num_items_in_batch=None):
        loss = step(model, inputs, num_items_in_batch)
        draws[trainer.state.global_step] = list(trainer.sampler.selected)
        return loss

    trainer.training_step = recorded
    trainer.train()
    ran = {}
    for global_step, where, index in calls:
        ran.setdefault((global_step, where), set()).add(index)
    return trainer, draws, ran


@pytest.mark.parametrize("mode", [True, False, 0, 1, 3, 6, 100])
def test_both_passes_checkpoint_exactly_the_planned_layers(tmp_path, mode):
    """Counted where transformers runs a layer through torch.utils.checkpoint: true checkpoints every
    layer outside the draw, false and 0 none, k the k farthest from the drawn layers."""
    layers = 8
    trainer, draws, ran = traced_trainer(tmp_path, mode, layers=layers)
    assert sorted(draws) == [0, 1, 2, 3, 4] and len({tuple(d) for d in draws.values()}) > 1
    for step, drawn in draws.items():
        unselected = [i for i in range(layers) if i not in drawn]
        count = len(unselected) if mode is True else min(mode, len(unselected))
        for where in ("pass 1", "pass 2"):
            checkpointed = ran.get((step, where), set())
            assert len(checkpointed) == count and checkpointed <= set(unselected), (step, where, drawn, checkpointed)
            kept = set(unselected) - checkpointed
            if checkpointed and kept:  # the kept ones are the nearest to a drawn layer
                assert max(distance(i, drawn) for i in kept) <= min(distance(i, drawn) for i in checkpointed)
    # The probe (steps 0 and 3) runs every layer checkpointed whenever checkpointing is on.
    for step in (0, 3):
        assert ran.get((step, "probe"), set()) == (set(range(layers)) if mode else set())
    assert trainer.hooks.live_hooks() == 0


def test_a_count_keeps_the_layers_nearest_the_drawn_ones(tmp_path):
    trainer = make_trainer("t-vaccine", tmp_path / "ten", model=lora_model(layers=10), layers_per_draw=2,
                           checkpoint_unselected=3)
    trainer.sampler.selected = [2, 7]
    # Distances to {2, 7}: 0:2 1:1 3:1 4:2 5:2 6:1 8:1 9:2; the three farthest, lower first on a tie.
    assert trainer.checkpointed_layers({2, 7}) == {0, 4, 5}
    trainer.args.checkpoint_unselected = 5
    assert trainer.checkpointed_layers({2, 7}) == {0, 4, 5, 9, 1}
    trainer.args.checkpoint_unselected = 0
    assert trainer.checkpointed_layers({2, 7}) == set()
    # Deep models: the reference keeps layer i-1 next to each drawn i; k counts the layers left over.
    deep = make_trainer("t-vaccine", tmp_path / "deep", model=lora_model(layers=28), layers_per_draw=2,
                        checkpoint_unselected=20)
    deep.sampler.selected = [5, 20]
    kept = deep.layer_modes([5, 20])[1]
    assert kept == {4, 5, 19, 20}
    checkpointed = deep.checkpointed_layers(kept)
    assert len(checkpointed) == 20 and not checkpointed & kept
    # Kept: 6 and 21 (distance 1), then of 3, 7, 18, 22 (distance 2) the higher two.
    assert set(range(28)) - kept - checkpointed == {6, 18, 21, 22}
    deep.args.checkpoint_unselected = 99
    assert deep.checkpointed_layers(kept) == set(range(28)) - kept


def test_every_checkpoint_count_gives_the_same_update(tmp_path):
    """LoRA dropout 0.1, probes and redraws inside the run: true, false and counts in between train the
    same weights (checkpointing recomputes activations, with the same dropout masks)."""
    states, initial = {}, lora_state(dropout_model())
    for mode in (True, False, 2, 5):
        trainer = make_trainer("t-vaccine", tmp_path / str(mode), model=dropout_model(), steps=5, rho=2.0,
                               layers_per_draw=2, resample_every=2, probe_every=3, checkpoint_unselected=mode)
        trainer.train()
        states[mode] = (lora_state(trainer.model), trainer.layer_history)
    reference, history = states[True]
    for mode, (state, other_history) in states.items():
        assert other_history == history  # same probes, same draws
        for name, value in reference.items():
            torch.testing.assert_close(state[name], value, rtol=1e-6, atol=1e-7, msg=f"{mode} {name}")
    assert any(not torch.equal(reference[name], value) for name, value in initial.items())  # it trained


@pytest.mark.parametrize("mode", [True, 2])
def test_accelerated_tvaccine_searches_every_tau_steps_and_trains_the_draw_in_between(tmp_path, mode):
    trainer = make_trainer("t-vaccine", tmp_path, model=_lora_b_nonzero(lora_model(layers=6)), steps=7, rho=2.0,
                           layers_per_draw=2, resample_every=2, probe_every=3, perturbation_interval=3,
                           checkpoint_unselected=mode)
    searches, perturbed, scopes = [], [], []
    search, perturb = trainer.search_perturbation, trainer.hooks.perturb
    trainer.search_perturbation = lambda *a, **k: (searches.append(trainer.state.global_step), search(*a, **k))
    trainer.hooks.perturb = lambda p: (perturbed.append(trainer.state.global_step), perturb(p))[1]
    step = trainer.training_step

    def recorded(model, inputs, num_items_in_batch=None):
        loss = step(model, inputs, num_items_in_batch)
        trains = {n for n, p in trainer.model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
        expected, _ = trainer.layer_modes(trainer.sampler.selected)
        scopes.append((trainer.state.global_step, trains, expected))
        return loss

    trainer.training_step = recorded
    trainer.train()
    assert searches == [0, 3, 6] and perturbed == [0, 3, 6]
    assert [e["step"] for e in trainer.layer_history if e["event"] == "draw"] == [0, 2, 4, 6]
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    for step_index, trains, expected in scopes:
        allowed = {names[id(p)] for i, (attention, other) in expected.items()
                   for p in (*(trainer._attention_lora[i] if attention else []),
                             *(trainer._other_lora[i] if other else []))}
        assert trains and trains <= allowed, step_index


@pytest.mark.parametrize("value", ["sometimes", "auto", -1, 1.5, None])
def test_bad_checkpoint_values_are_rejected_in_one_line(tmp_path, value):
    with pytest.raises(UserError, match=r"^checkpoint_unselected must be true, false or a number of layers >= 0, "
                                        r"got .+$"):
        METHODS["t-vaccine"][0](output_dir=str(tmp_path), checkpoint_unselected=value)


def test_checkpoint_values_are_read_from_text(tmp_path):
    """A config file or flag gives text or YAML values: 1 is one layer, true is all of them."""
    from tvaccine.config import coerce, type_hints

    config_class = METHODS["t-vaccine"][0]
    hint = type_hints(config_class)["checkpoint_unselected"]
    read = {text: coerce(text, hint, "checkpoint_unselected", text=True) for text in ("true", "false", "0", "1", "12")}
    assert read == {"true": True, "false": False, "0": 0, "1": 1, "12": 12}
    assert read["1"] is not True and coerce(True, hint, "x") is True and coerce(1, hint, "x") is not True
    assert config_class(output_dir=str(tmp_path)).checkpoint_unselected is True
    assert config_class(output_dir=str(tmp_path), checkpoint_unselected=4).checkpoint_unselected == 4


def _step_cost():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import step_cost

    return step_cost


def test_step_cost_measures_checkpoint_counts_and_tau_in_one_run(tmp_path):
    step_cost = _step_cost()
    settings = step_cost.Settings(shape="tiny", batch=2, seq_len=16, steps=2, cpu=True,
                                  methods=("vaccine", "t-vaccine"), layers_per_draw=(1,),
                                  trainable_scopes=("reference",), checkpoint_modes=(True, False, 2),
                                  perturbation_intervals=(10,))
    settings.validate()
    results = step_cost.run_jobs(settings, spawn=False, log=lambda line: None)
    out = step_cost.write_report(results, settings, "python benchmarks/step_cost.py --shape tiny", tmp_path / "out")
    assert [r["label"] for r in results] == [
        "Vaccine (rho 2)",
        "T-Vaccine S=1/4, reference scope, checkpoint true (rho 3)",
        "T-Vaccine S=1/4, reference scope, checkpoint false (rho 3)",
        "T-Vaccine S=1/4, reference scope, checkpoint 2 (rho 3)",
        "T-Vaccine S=1/4, reference scope, checkpoint true, accelerated tau 10 (non-paper) (rho 3)"]
    vaccine, true, false, two, fast = results
    assert all("error" not in r for r in results)
    assert [len(r["checkpointed_layers"]) for r in (true, false, two)] == [3, 0, 2]
    assert true["unselected_layers"] == 3 and true["lora"] == {"r": 8, "alpha": 1, "dropout": 0.1}
    # Steps 1..2 are plain: one search step from the tau-1 twin, nine plain ones of its own.
    assert fast["searched"] == [False, False]
    assert fast["amortised"]["search_step_from"] == true["label"]
    assert fast["median_step_s"] == pytest.approx((true["median_step_s"] + 9 * fast["plain_step_s"]) / 10)
    assert two["ratios"]["median_step_s"]["vaccine"] == pytest.approx(two["median_step_s"] / vaccine["median_step_s"])
    text = (out / "step_cost.md").read_text()
    assert "## T-Vaccine by checkpointed layers" in text
    row = next(line for line in text.splitlines() if line.startswith(f"| {two['label']} | 2 / 3 |"))
    assert f"| {two['median_step_s']:.3f} |" in row and f"| {two['peak_rss_bytes'] / 2**30:.2f} |" in row


@pytest.mark.parametrize("argv, message", [
    (["--checkpoint-modes", "maybe"], "unknown checkpoint mode 'maybe'; use true, false or a number of layers"),
    (["--checkpoint-modes", "auto"], "unknown checkpoint mode 'auto'"),
    (["--checkpoint-modes", "-1"], "unknown checkpoint mode '-1'"),
    (["--perturbation-intervals", "1"], "perturbation intervals (Accelerated T-Vaccine's tau) must be >= 2"),
    (["--methods", "sft,vaccine", "--checkpoint-modes", "4"], "T-Vaccine options are given but"),
])
def test_step_cost_refuses_bad_tvaccine_options(tmp_path, capsys, argv, message):
    assert _step_cost().main(["--shape", "tiny", *argv, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"step_cost: error: {message}") and err.count("\n") == 1
    assert not (tmp_path / "out").exists()
