"""T-Vaccine without needless work: `checkpoint_unselected: auto` under a memory budget, a pass 1 that
records nothing below the lowest drawn layer, pass 2 starting from pass 1's hidden state, and
Accelerated T-Vaccine. Each one must leave the update unchanged (or, for the accelerated variant,
change only which steps search)."""

import pytest
import torch

from test_methods import _lora_b_nonzero, lora_model, lora_state, make_trainer
from tiny_models import tiny_model
from tvaccine.errors import UserError
from tvaccine.methods import METHODS
from tvaccine.methods import tvaccine as tvaccine_module
from tvaccine.models import add_lora

BASE = 10 * 2**30  # a fixed "memory held before the step", so that the plans do not depend on this process


@pytest.fixture
def fixed_memory(monkeypatch):
    """The planner's memory readings made deterministic: held memory BASE, and a peak that never
    rises above it (so the first step calibrates the head to 0 and no step corrects it)."""
    monkeypatch.setattr(tvaccine_module, "current_memory_bytes", lambda device: BASE)
    monkeypatch.setattr(tvaccine_module.TVaccineTrainer, "measured_peak_bytes", lambda self: BASE)


def auto_trainer(tmp_path, layers=8, steps=1, budget_gib=1000.0, model=None, **options):
    """The upper half of the layers is never drawn, so every draw leaves several layers to plan for."""
    options = {"layers_per_draw": 2, "resample_every": 2, "probe_every": 3, "rho": 2.0,
               "exclude_layers": list(range(layers // 2, layers)), **options}
    return make_trainer("t-vaccine", tmp_path, model=model or _lora_b_nonzero(lora_model(layers=layers)),
                        steps=steps, checkpoint_unselected="auto", memory_budget_gib=budget_gib, **options)


def dropout_model():
    """LoRA dropout on: the planner's replays must not move the random stream either."""
    return _lora_b_nonzero(add_lora(tiny_model(layers=8), dropout=0.1))


def candidates(modes):
    return sorted(i for i, m in modes.items() if m.in_graph and not m.fixed)


def extremes(trainer):
    """The estimated peaks with no candidate checkpointed and with all of them, for the current draw."""
    modes = trainer.pass2_modes(trainer.sampler.selected)
    tokens = trainer.layer_history[-1]["tokens"]
    planner = trainer.planner
    every = planner.estimate(modes, set(candidates(modes)), tokens)
    return modes, tokens, planner.estimate(modes, set(), tokens), every


def test_auto_checkpoints_fewer_layers_for_a_larger_budget_and_never_exceeds_one_it_can_meet(tmp_path, fixed_memory):
    trainer = auto_trainer(tmp_path)
    trainer.train()  # the first step runs as `true` and calibrates the planner
    modes, tokens, none, every = extremes(trainer)
    assert every < none  # checkpointing saves memory on the estimate
    layers = candidates(modes)
    assert len(layers) >= 4
    planner, counts = trainer.planner, []
    for budget in torch.linspace(every - 1000, none + 1000, 41).tolist():
        planner.budget_bytes = int(budget)
        plan = planner.plan(modes, tokens)
        chosen = [i for i in plan.checkpointed if i in layers]
        counts.append(len(chosen))
        assert plan.estimated_peak_bytes == planner.estimate(modes, set(plan.checkpointed), tokens)
        if budget >= every:  # a budget it can meet: met, with the fewest layers
            assert plan.fits and plan.estimated_peak_bytes <= budget
            for index in chosen:
                assert planner.estimate(modes, set(plan.checkpointed) - {index}, tokens) > budget
        else:  # it cannot: every candidate checkpointed, and said so
            assert not plan.fits and chosen == layers
        if budget >= none:
            assert chosen == []
    assert counts == sorted(counts, reverse=True)
    assert counts[0] == len(layers) and counts[-1] == 0 and 0 < counts[len(counts) // 2] < len(layers)


def test_the_replayed_layer_activations_are_what_the_forward_saves(tmp_path, fixed_memory):
    """The per-layer estimate counts the bytes autograd saves inside each layer; checked against a
    real forward with nothing checkpointed (only the position embeddings, shared by all layers, are
    counted in each layer here and once in the estimate)."""
    trainer = auto_trainer(tmp_path, layers=6)
    trainer.train()
    selected = trainer.sampler.selected
    modes = trainer.pass2_modes(selected)
    trainer._apply_modes(trainer.layer_modes(selected)[0], checkpointed=set())
    params = {p.untyped_storage().data_ptr() for p in trainer.model.parameters()}
    current, saved = [None], {}
    handles = []
    for layer in trainer.hooks.layers:
        handles.append(layer.layer.register_forward_pre_hook(lambda m, a, i=layer.index: current.__setitem__(0, i)))
        handles.append(layer.layer.register_forward_hook(lambda m, a, o: current.__setitem__(0, None)))

    def pack(tensor):
        storage = tensor.untyped_storage()
        if current[0] is not None and storage.data_ptr() not in params:
            saved.setdefault(current[0], {})[storage.data_ptr()] = storage.nbytes()
        return tensor

    batch = next(iter(trainer.get_train_dataloader()))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        trainer.model(**batch).loss
    for handle in handles:
        handle.remove()
    tokens = batch["input_ids"].numel()
    for index, mode in modes.items():
        real = sum(saved.get(index, {}).values()) / tokens
        estimate = trainer.planner.full[mode.key(index)]
        assert estimate == pytest.approx(real, rel=0.02, abs=1e-9), index
        assert (estimate > 0) == mode.in_graph


def test_auto_leaves_the_update_unchanged_against_true_and_false(tmp_path, fixed_memory, monkeypatch):
    """Pass 1 records less than pass 2, so it gets its own plan with fewer checkpointed layers."""
    from tvaccine.methods import vaccine as vaccine_module

    in_pass1, search = [], vaccine_module.attention_output_grads

    def recorded(hooks, *args, **kwargs):
        in_pass1.append(sorted(layer.index for layer in hooks.layers if layer.layer.gradient_checkpointing))
        return search(hooks, *args, **kwargs)

    monkeypatch.setattr(vaccine_module, "attention_output_grads", recorded)
    probe = auto_trainer(tmp_path / "probe", model=dropout_model())
    probe.train()
    _, _, none, every = extremes(probe)
    budget = (none + every) / 2 / 2**30
    states, plans = {}, []
    for mode in (True, False, "auto"):
        options = {"checkpoint_unselected": mode, "memory_budget_gib": budget if mode == "auto" else None}
        trainer = make_trainer("t-vaccine", tmp_path / str(mode), model=dropout_model(), steps=5, layers_per_draw=2,
                               resample_every=2, probe_every=3, rho=2.0, exclude_layers=[4, 5, 6, 7], **options)
        trainer.train()
        states[mode] = lora_state(trainer.model)
        passes, in_pass1[:] = list(in_pass1), []
        if mode == "auto":
            plans = [e for e in trainer.layer_history if e["event"] == "checkpoint_plan" and not e.get("calibration")]
            modes = [trainer.pass2_modes(e["selected"]) for e in plans]
    assert [e["step"] for e in plans] == [1, 2, 4]  # after the calibrating step, then at every draw
    partial = [e for e, m in zip(plans, modes) if 0 < len(set(e["checkpointed"]) & set(candidates(m))) <
               len(candidates(m))]
    assert partial, "the budget should checkpoint some but not all of the unselected layers"
    assert all(e["fits"] and e["estimated_peak_bytes"] <= budget * 2**30 and e["measured_peak_bytes"] == BASE
               for e in plans)
    assert all(len(e["pass1_checkpointed"]) <= len(e["checkpointed"]) for e in plans)
    assert any(len(e["pass1_checkpointed"]) < len(e["checkpointed"]) for e in plans)
    by_step = {e["step"]: e["pass1_checkpointed"] for e in plans}
    assert [passes[step] for step in (1, 2, 3, 4)] == [by_step[1], by_step[2], by_step[2], by_step[4]]
    for name, value in states[True].items():
        torch.testing.assert_close(states["auto"][name], value, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(states[False][name], value, rtol=1e-5, atol=1e-6)


def test_auto_replans_when_a_step_goes_past_its_estimate(tmp_path, monkeypatch):
    """A measured peak above the estimate (here: 1 MiB more than planned) raises the estimate and
    makes the next step plan again, with more layers checkpointed when the budget is tight."""
    monkeypatch.setattr(tvaccine_module, "current_memory_bytes", lambda device: BASE)
    peaks = iter([BASE, BASE, BASE, BASE + 2**20])  # before and after step 0, then step 1
    monkeypatch.setattr(tvaccine_module.TVaccineTrainer, "measured_peak_bytes", lambda self: next(peaks))
    trainer = auto_trainer(tmp_path, steps=2, resample_every=100, probe_every=100)
    trainer.train()
    plan = [e for e in trainer.layer_history if e["event"] == "checkpoint_plan"][-1]
    assert plan["step"] == 1 and plan["measured_peak_bytes"] == BASE + 2**20 and plan["measured_in_step"]
    excess = BASE + 2**20 - plan["estimated_peak_bytes"]
    assert excess > 0 and trainer.planner.head_per_token == pytest.approx(excess / plan["tokens"])
    assert trainer._plan is None  # so step 2 would plan again


def test_pass_one_records_no_graph_below_the_lowest_drawn_layer_and_finds_the_same_perturbation(tmp_path):
    """28 layers, reference scope: the layer below each drawn layer runs uncheckpointed with its MLP
    LoRA trainable, so without the lean pass 1 its output carries a graph in pass 1."""
    results = {}
    for lean in (False, True):
        trainer = make_trainer("t-vaccine", tmp_path / str(lean), model=_lora_b_nonzero(lora_model(layers=28)),
                               steps=3, layers_per_draw=3, resample_every=2, probe_every=2, rho=2.0,
                               exclude_layers=list(range(10)))
        trainer.lean_pass1, trainer.reuse_lower_hidden_state = lean, False
        seen, search = [], trainer.search_perturbation

        def traced(model, inputs, num_items_in_batch=None, trainer=trainer, seen=seen, search=search):
            grad_below = []
            lowest = min(trainer.perturbed_layers())
            handles = [layer.layer.register_forward_hook(
                lambda m, a, o: grad_below.append((o[0] if isinstance(o, tuple) else o).requires_grad))
                for layer in trainer.hooks.layers[:lowest]]
            before = [p.requires_grad for p in trainer.model.parameters()]
            try:
                search(model, inputs, num_items_in_batch)
            finally:
                for handle in handles:
                    handle.remove()
            assert [p.requires_grad for p in trainer.model.parameters()] == before  # pass 1 restores the scope
            seen.append((lowest, any(grad_below), {i: e.clone() for i, e in trainer._perturbation.items()}))

        trainer.search_perturbation = traced
        trainer.train()
        results[lean] = (seen, lora_state(trainer.model))
        assert trainer.hooks.live_hooks() == 0
    assert all(lowest >= 10 for lowest, _, _ in results[True][0])
    assert all(graph for _, graph, _ in results[False][0])  # the neighbour layer's MLP LoRA records a graph
    assert not any(graph for _, graph, _ in results[True][0])
    for (_, _, lean), (_, _, full) in zip(results[True][0], results[False][0]):
        for index in full:
            torch.testing.assert_close(lean[index], full[index], rtol=1e-5, atol=1e-7)
    for name, value in results[False][1].items():
        torch.testing.assert_close(results[True][1][name], value, rtol=1e-5, atol=1e-6)


def test_the_lean_pass_one_leaves_vaccine_unchanged(tmp_path):
    states = []
    for lean in (False, True):
        trainer = make_trainer("vaccine", tmp_path / str(lean), model=_lora_b_nonzero(lora_model()), steps=3, rho=2.0)
        trainer.lean_pass1 = lean
        trainer.train()
        states.append(lora_state(trainer.model))
    for name, value in states[0].items():
        torch.testing.assert_close(states[1][name], value, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("scope", ["reference", "drawn"])
def test_pass_two_starting_from_pass_one_hidden_state_leaves_the_update_unchanged(tmp_path, scope):
    """Layers 0 and 1 are never drawn, so nothing below the lowest drawn layer trains and pass 2 can
    start there; with LoRA dropout the two passes differ below it, and pass 2 recomputes them."""
    states, reused = {}, {}
    for reuse in (False, True):
        trainer = make_trainer("t-vaccine", tmp_path / str(reuse), model=_lora_b_nonzero(lora_model(layers=6)),
                               steps=4, layers_per_draw=2, resample_every=2, probe_every=2, rho=2.0,
                               trainable_scope=scope, exclude_layers=[0, 1])
        trainer.reuse_lower_hidden_state = reuse
        trainer.train()
        states[reuse], reused[reuse] = lora_state(trainer.model), trainer.reused_hidden_states
        assert trainer.hooks.live_hooks() == 0
    assert reused == {False: 0, True: 4}
    for name, value in states[False].items():
        torch.testing.assert_close(states[True][name], value, rtol=1e-5, atol=1e-6)
    dropout = make_trainer("t-vaccine", tmp_path / "dropout", model=add_lora(tiny_model(layers=6), dropout=0.1),
                           steps=2, layers_per_draw=2, exclude_layers=[0, 1], trainable_scope=scope)
    dropout.train()
    assert dropout.reused_hidden_states == 0


@pytest.mark.parametrize("mode", [True, "auto"])
def test_accelerated_tvaccine_searches_every_tau_steps_and_trains_the_draw_in_between(tmp_path, mode, fixed_memory):
    trainer = make_trainer("t-vaccine", tmp_path, model=_lora_b_nonzero(lora_model(layers=6)), steps=7, rho=2.0,
                           layers_per_draw=2, resample_every=2, probe_every=3, perturbation_interval=3,
                           checkpoint_unselected=mode, memory_budget_gib=1000.0 if mode == "auto" else None)
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


@pytest.mark.parametrize("options,message", [
    ({"checkpoint_unselected": "sometimes"}, "checkpoint_unselected must be true, false or auto, got 'sometimes'"),
    ({"memory_budget_gib": 4.0}, "memory_budget_gib applies to checkpoint_unselected: auto only"),
    ({"checkpoint_unselected": "auto", "memory_budget_gib": 0.0}, "memory budget must be > 0 GiB"),
])
def test_bad_checkpoint_options_are_rejected(tmp_path, options, message):
    with pytest.raises(UserError, match=message):
        METHODS["t-vaccine"][0](output_dir=str(tmp_path), **options)


def test_checkpoint_modes_are_read_from_text(tmp_path):
    config_class = METHODS["t-vaccine"][0]
    assert config_class(output_dir=str(tmp_path), checkpoint_unselected="false").checkpoint_unselected is False
    assert config_class(output_dir=str(tmp_path), checkpoint_unselected="Auto").checkpoint_unselected == "auto"
    from tvaccine.config import coerce, type_hints

    hint = type_hints(config_class)["checkpoint_unselected"]
    assert coerce("true", hint, "x", text=True) is True and coerce("auto", hint, "x", text=True) == "auto"


def _step_cost():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import step_cost

    return step_cost


def test_step_cost_measures_every_checkpoint_mode_budget_tau_and_ablation_in_one_run(tmp_path):
    step_cost = _step_cost()
    settings = step_cost.Settings(shape="tiny", batch=2, seq_len=16, steps=3, cpu=True,
                                  methods=("t-vaccine", "vaccine"), layers_per_draw=(2,),
                                  trainable_scopes=("reference",),
                                  checkpoint_modes=("true", "auto"), budgets=(1.0,), perturbation_intervals=(10,),
                                  ablations=("reuse_lower_hidden_state",))
    settings.validate()
    results = step_cost.run_jobs(settings, spawn=False, log=lambda line: None)
    out = step_cost.write_report(results, settings, "python benchmarks/step_cost.py --shape tiny", tmp_path / "out")
    labels = [r["label"] for r in results]
    assert labels == [
        "Vaccine (rho 2)",
        "T-Vaccine S=2/4, reference scope, checkpoint true (rho 3)",
        "T-Vaccine S=2/4, reference scope, checkpoint auto within 1x Vaccine's peak (rho 3)",
        "T-Vaccine S=2/4, reference scope, checkpoint true, accelerated tau 10 (non-paper) (rho 3)",
        "T-Vaccine S=2/4, reference scope, checkpoint auto within 1x Vaccine's peak, accelerated tau 10 (non-paper) "
        "(rho 3)",
        "T-Vaccine S=2/4, reference scope, checkpoint true, without reuse_lower_hidden_state (rho 3)"]
    vaccine, true, auto, fast, fast_auto, ablation = results
    assert all("error" not in r for r in results)
    assert auto["memory_budget_gib"] == pytest.approx(vaccine["peak_rss_bytes"] / 2**30)
    assert auto["checkpoint_mode"] == "auto" and true["checkpoint_mode"] is True
    # Calibration, then the plan (and a re-plan when this process's peak rose past the estimate).
    plans = auto["checkpoint_plans"]
    assert [(e["step"], e.get("calibration", False)) for e in plans][:2] == [(0, True), (1, False)]
    assert true["checkpoint_plans"] == [] and ablation["reused_hidden_states"] == 0
    # Accelerated: steps 2..3 are plain; one search step from the tau-1 twin, nine plain ones of its own.
    assert fast["searched"] == [True, False, False]
    amortised = fast["amortised"]
    assert amortised["search_step_from"] == true["label"] and amortised["search_step_s"] == true["mean_step_s"]
    assert fast["mean_step_s"] == pytest.approx((true["mean_step_s"] + 9 * fast["plain_step_s"]) / 10)
    assert fast_auto["amortised"]["search_step_from"] == auto["label"]
    assert fast["ratios"]["mean_step_s"]["vaccine"] == pytest.approx(fast["mean_step_s"] / vaccine["mean_step_s"])
    text = (out / "step_cost.md").read_text()
    assert "## T-Vaccine against Vaccine" in text
    start = f"| {auto['label']} | {auto['memory_budget_gib']:.2f} |"
    row = next(line for line in text.splitlines() if line.startswith(start))
    assert f"| {auto['mean_step_s']:.3f} | {auto['mean_step_s'] / vaccine['mean_step_s']:.2f} |" in row


@pytest.mark.parametrize("argv, message", [
    (["--checkpoint-modes", "maybe"], "unknown checkpoint mode 'maybe'"),
    (["--checkpoint-modes", "true", "--budgets", "0.8"], "budgets are for checkpoint mode auto"),
    (["--methods", "t-vaccine", "--checkpoint-modes", "auto", "--budgets", "0.8"], "budgets are fractions of Vaccine"),
    (["--checkpoint-modes", "auto", "--budgets", "0,1"], "budgets must be > 0"),
    (["--perturbation-intervals", "1"], "perturbation intervals (Accelerated T-Vaccine's tau) must be >= 2"),
    (["--ablations", "everything"], "unknown ablation 'everything'"),
    (["--methods", "sft", "--ablations", "lean_pass1"], "the ablations apply to t-vaccine, vaccine"),
    (["--methods", "sft,vaccine", "--checkpoint-modes", "auto"], "T-Vaccine options are given but"),
])
def test_step_cost_refuses_bad_tvaccine_speed_options(tmp_path, capsys, argv, message):
    assert _step_cost().main(["--shape", "tiny", *argv, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"step_cost: error: {message}") and err.count("\n") == 1
    assert not (tmp_path / "out").exists()
