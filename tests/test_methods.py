"""The semantics of SFT, Vaccine and T-Vaccine, on tiny random models."""

import pytest
import torch

from tiny_models import stack_collator, tiny_model, token_batch, token_dataset
from tvaccine.errors import UserError
from tvaccine.layer_selection import LayerSampler, ProbeStream, layer_probabilities
from tvaccine.methods import METHODS
from tvaccine.models import add_lora, find_decoder_layers
from tvaccine.perturbation import AttentionHooks, attention_output_grads, gradient_norm, worst_case_perturbation


def lora_model(layers=4, family="llama"):
    return add_lora(tiny_model(family, layers=layers), dropout=0.0)


def make_trainer(method, tmp_path, model=None, steps=1, **options):
    config_class, trainer_class = METHODS[method]
    args = config_class(output_dir=str(tmp_path / method), max_steps=steps, per_device_train_batch_size=4,
                        disable_tqdm=True, use_cpu=True, seed=0, data_seed=0, logging_steps=1,
                        lr_scheduler_type="constant", max_grad_norm=1e9, **options)
    extra = {"harmful_dataset": token_dataset(8, seed=1)} if trainer_class.harmful_data else {}
    return trainer_class(model=model or lora_model(), args=args, train_dataset=token_dataset(16),
                         data_collator=stack_collator, **extra)


def lora_state(model):
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}


def test_rho_zero_gives_exactly_the_sft_update(tmp_path):
    sft = make_trainer("sft", tmp_path, steps=2)
    sft.train()
    vaccine = make_trainer("vaccine", tmp_path, steps=2, rho=0.0)
    vaccine.train()
    for name, value in lora_state(sft.model).items():
        torch.testing.assert_close(lora_state(vaccine.model)[name], value, rtol=0, atol=0)


def test_vaccine_update_differs_from_sft_when_rho_is_positive(tmp_path):
    sft = make_trainer("sft", tmp_path, steps=2)
    sft.train()
    vaccine = make_trainer("vaccine", tmp_path, steps=2, rho=5.0)
    vaccine.train()
    diffs = [(lora_state(vaccine.model)[n] - v).abs().max().item() for n, v in lora_state(sft.model).items()]
    assert max(diffs) > 1e-6


def _lora_b_nonzero(model):
    for name, param in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.1)
    return model


def test_perturbation_global_norm_equals_rho():
    model = _lora_b_nonzero(lora_model())
    hooks = AttentionHooks(find_decoder_layers(model))
    grads, _ = attention_output_grads(hooks, range(4), lambda: model(**token_batch()).loss)
    perturbation, norm = worst_case_perturbation(grads, rho=3.0)
    assert norm > 0
    assert gradient_norm(perturbation).item() == pytest.approx(3.0, rel=1e-5)
    assert all(perturbation[i].shape == grads[i].shape for i in range(4))


def test_pass_one_matches_a_naive_full_backward():
    model = _lora_b_nonzero(lora_model())
    batch = token_batch()
    hooks = AttentionHooks(find_decoder_layers(model))
    grads, _ = attention_output_grads(hooks, range(4), lambda: model(**batch).loss)
    assert all(p.grad is None for p in model.parameters())  # no parameter gradient written
    with hooks.capture(range(4)) as captured:
        loss = model(**batch).loss
    for h in captured.values():
        h.retain_grad()
    loss.backward()
    for index in range(4):
        torch.testing.assert_close(grads[index], captured[index].grad)
    naive, _ = worst_case_perturbation({i: h.grad for i, h in captured.items()}, 2.0)
    ours, _ = worst_case_perturbation(grads, 2.0)
    for index in range(4):
        torch.testing.assert_close(ours[index], naive[index])


def test_perturbation_is_added_to_the_attention_output_and_hooks_never_survive():
    model = lora_model()
    hooks = AttentionHooks(find_decoder_layers(model))
    batch = token_batch()
    with hooks.capture([1]) as clean:
        model(**batch)
    delta = torch.full_like(clean[1], 0.25)
    with hooks.perturb({1: delta}), hooks.capture([1]) as seen:
        model(**batch)
    assert hooks.live_hooks() == 0
    torch.testing.assert_close(seen[1], clean[1] + 0.25)  # hooks chain: capture sees the perturbed output
    with pytest.raises(RuntimeError, match="boom"):
        with hooks.perturb({1: delta}):
            assert hooks.live_hooks() == 1
            raise RuntimeError("boom")
    assert hooks.live_hooks() == 0


def test_no_hook_survives_training(tmp_path):
    for method in ("vaccine", "t-vaccine"):
        trainer = make_trainer(method, tmp_path, steps=2, **({"resample_every": 1, "probe_every": 1}
                                                             if method == "t-vaccine" else {}))
        trainer.train()
        assert trainer.hooks.live_hooks() == 0


@pytest.mark.parametrize("scope", ["reference", "drawn"])
def test_tvaccine_trains_exactly_its_scope(tmp_path, scope):
    """reference: attention LoRA of the S drawn layers + all other LoRA from the lowest drawn layer
    up; drawn: every LoRA of the S layers and nothing else. Frozen LoRA gets no gradient and does
    not move, even under weight decay."""
    model = _lora_b_nonzero(lora_model(layers=6))
    before = lora_state(model)
    trainer = make_trainer("t-vaccine", tmp_path, model=model, steps=1, layers_per_draw=2, resample_every=5,
                           probe_every=5, weight_decay=0.1, trainable_scope=scope)
    grads_seen = {}

    def record(*args, **kwargs):
        for name, param in trainer.model.named_parameters():
            if "lora_" in name:
                grads_seen[name] = param.grad is not None and param.grad.abs().sum().item() > 0

    trainer.optimizer = None
    original = trainer.create_optimizer

    def create_optimizer(*args, **kwargs):
        optimizer = original(*args, **kwargs)
        optimizer.register_step_pre_hook(record)
        return optimizer

    trainer.create_optimizer = create_optimizer
    trainer.train()
    selected = set(trainer.sampler.selected)
    assert len(selected) == 2
    after = lora_state(trainer.model)
    layers = find_decoder_layers(trainer.model)
    names = {id(param): name for name, param in trainer.model.named_parameters()}
    attention_names = {names[id(p)] for layer in layers for p in layer.attention.parameters()}
    layer_of = {names[id(p)]: layer.index for layer in layers for p in layer.layer.parameters()}

    def layer_index_of(name):
        return layer_of[name]

    expected = set()
    for name in before:
        index = layer_index_of(name)
        if scope == "drawn":
            trains = index in selected
        else:
            trains = index in selected if name in attention_names else index >= min(selected)
        if trains:
            expected.add(name)
    assert expected, "the draw trains nothing"
    assert {n for n, seen in grads_seen.items() if seen} == expected
    for name, value in before.items():
        if name not in expected:
            torch.testing.assert_close(after[name], value, rtol=0, atol=0)
    assert all(not torch.equal(after[n], before[n]) for n in expected)


def test_reference_scope_keeps_the_layer_below_each_draw_uncheckpointed_in_deep_models(tmp_path):
    trainer = make_trainer("t-vaccine", tmp_path, model=lora_model(layers=28), layers_per_draw=2)
    trainable, uncheckpointed = trainer.layer_modes([5, 20])
    assert uncheckpointed == {4, 5, 19, 20}
    assert [i for i, (attention, _) in trainable.items() if attention] == [5, 20]
    assert [i for i, (_, other) in trainable.items() if other] == list(range(4, 28))
    shallow = make_trainer("t-vaccine", tmp_path, model=lora_model(layers=6), layers_per_draw=2)
    assert shallow.layer_modes([2, 4])[1] == {2, 4}


def test_tvaccine_with_all_layers_equals_vaccine(tmp_path):
    vaccine = make_trainer("vaccine", tmp_path, model=_lora_b_nonzero(lora_model()), steps=2, rho=3.0)
    vaccine.train()
    tvaccine = make_trainer("t-vaccine", tmp_path, model=_lora_b_nonzero(lora_model()), steps=2, rho=3.0,
                            layers_per_draw=4, resample_every=1, probe_every=1)
    tvaccine.train()
    for name, value in lora_state(vaccine.model).items():
        torch.testing.assert_close(lora_state(tvaccine.model)[name], value, rtol=1e-5, atol=1e-6)


def test_tvaccine_probes_every_k_and_draws_every_j(tmp_path):
    trainer = make_trainer("t-vaccine", tmp_path, model=lora_model(layers=8), steps=7, layers_per_draw=2,
                           resample_every=2, probe_every=3)
    trainer.train()
    probes = [e["step"] for e in trainer.layer_history if e["event"] == "probe"]
    draws = [e["step"] for e in trainer.layer_history if e["event"] == "draw"]
    assert probes == [0, 3, 6]
    assert draws == [0, 2, 4, 6]
    for event in trainer.layer_history:
        if event["event"] == "probe":
            assert sum(event["probabilities"]) == pytest.approx(1.0)
            assert len(event["norms"]) == 8 and min(event["norms"]) > 0


def test_sampling_follows_the_layer_probabilities():
    probabilities = layer_probabilities(torch.tensor([8.0, 4.0, 2.0, 1.0, 1.0]))
    torch.testing.assert_close(probabilities, torch.tensor([0.5, 0.25, 0.125, 0.0625, 0.0625], dtype=torch.float64))
    sampler = LayerSampler(5, 1, seed=0)
    sampler.probabilities = probabilities
    counts = torch.zeros(5)
    draws = 4000
    for _ in range(draws):
        counts[sampler.draw()[0]] += 1
    expected = probabilities.float() * draws
    chi_square = ((counts - expected) ** 2 / expected).sum().item()
    assert chi_square < 18.47  # 99.9% quantile of chi-square with 4 degrees of freedom
    sampler.layers_per_draw = 3
    picks = sampler.draw()
    assert len(set(picks)) == 3 and picks == sorted(picks)


def test_non_paper_probability_options_temperature_and_excluded_layers():
    norms = torch.tensor([8.0, 4.0, 2.0, 2.0])
    # T=2 takes square roots before normalising: sqrt(8), 2, sqrt(2), sqrt(2).
    flat = layer_probabilities(norms, temperature=2.0)
    expected = torch.tensor([8 ** 0.5, 2.0, 2 ** 0.5, 2 ** 0.5], dtype=torch.float64)
    torch.testing.assert_close(flat, expected / expected.sum())
    assert flat[0] < layer_probabilities(norms)[0] < layer_probabilities(norms, temperature=0.5)[0]
    excluded = layer_probabilities(norms, exclude=[0])
    torch.testing.assert_close(excluded, torch.tensor([0.0, 0.5, 0.25, 0.25], dtype=torch.float64))
    # No harmful gradient anywhere: uniform over the allowed layers only.
    torch.testing.assert_close(layer_probabilities(torch.zeros(4), exclude=[0]),
                               torch.tensor([0.0, 1 / 3, 1 / 3, 1 / 3], dtype=torch.float64))
    sampler = LayerSampler(4, 3, seed=0, exclude=[0])
    sampler.probabilities = layer_probabilities(torch.tensor([5.0, 1.0, 0.0, 0.0]), exclude=[0])
    assert all(0 not in sampler.draw() for _ in range(50))  # the fill-up for zero-gradient layers too


def test_tvaccine_never_draws_an_excluded_layer(tmp_path):
    trainer = make_trainer("t-vaccine", tmp_path, steps=6, rho=1.0, layers_per_draw=2, resample_every=1,
                           probe_every=3, probe_samples=4, exclude_layers=[0])
    trainer.train()
    draws = [e["selected"] for e in trainer.layer_history if e["event"] == "draw"]
    assert len(draws) == 6 and all(0 not in d and len(d) == 2 for d in draws)
    probes = [e for e in trainer.layer_history if e["event"] == "probe"]
    assert all(p["probabilities"][0] == 0.0 and p["norms"][0] > 0 for p in probes)


def test_sampler_state_round_trip_reproduces_draws():
    sampler = LayerSampler(10, 3, seed=7)
    sampler.probabilities = layer_probabilities(torch.arange(1, 11).double())
    sampler.draw()
    state = sampler.state_dict()
    first = [sampler.draw() for _ in range(5)]
    clone = LayerSampler(10, 3, seed=123)
    clone.load_state_dict(state)
    assert [clone.draw() for _ in range(5)] == first


@pytest.mark.parametrize("options,message", [
    ({"rho": -1.0}, "rho must be >= 0"),
    ({"layers_per_draw": 0}, "S .* must be >= 1"),
    ({"resample_every": 0}, "J .* must be >= 1"),
    ({"probe_every": 0}, "K .* must be >= 1"),
    ({"probability_temperature": 0.0}, "temperature must be > 0"),
    ({"exclude_layers": [-1]}, "excluded layers must be a list of layer indices >= 0, got \\[-1\\]"),
    ({"exclude_layers": 0}, "excluded layers must be a list of layer indices >= 0, got 0"),
    ({"probe_batch_size": 0}, "probe batch size must be >= 1"),
    ({"trainable_scope": "all"}, "trainable scope must be one of reference, drawn"),
])
def test_bad_tvaccine_options_are_rejected_before_training(tmp_path, options, message):
    with pytest.raises(UserError, match=message):
        METHODS["t-vaccine"][0](output_dir=str(tmp_path), **options)


def test_tvaccine_rejects_more_layers_than_the_model_has_and_an_empty_probe_set(tmp_path):
    with pytest.raises(UserError, match="only 4"):
        make_trainer("t-vaccine", tmp_path, layers_per_draw=5)
    with pytest.raises(UserError, match=r"only 4 \(2 excluded\)"):
        make_trainer("t-vaccine", tmp_path, layers_per_draw=3, exclude_layers=[0, 1])
    with pytest.raises(UserError, match=r"S = 1 layers per draw, but the model has only 4 \(4 excluded\)"):
        make_trainer("t-vaccine", tmp_path, exclude_layers=[0, 1, 2, 3])  # default S = depth / 4
    with pytest.raises(UserError, match="excluded layer 4 does not exist"):
        make_trainer("t-vaccine", tmp_path, exclude_layers=[4])
    config_class, trainer_class = METHODS["t-vaccine"]
    with pytest.raises(UserError, match="needs a non-empty harmful data set"):
        trainer_class(model=lora_model(), args=config_class(output_dir=str(tmp_path), use_cpu=True),
                      train_dataset=token_dataset(4), data_collator=stack_collator, harmful_dataset=token_dataset(0))


@pytest.mark.parametrize("family", ["gpt2", "opt", "gpt_neox", "phi", "gemma2", "qwen2"])
def test_every_method_trains_every_family(tmp_path, family):
    for method in METHODS:
        model = _lora_b_nonzero(lora_model(layers=4, family=family))
        before = lora_state(model)
        options = {"layers_per_draw": 2, "resample_every": 1, "probe_every": 1} if method == "t-vaccine" else {}
        trainer = make_trainer(method, tmp_path, model=model, steps=1, **options)
        trainer.train()
        changed = [n for n, v in lora_state(trainer.model).items() if not torch.equal(v, before[n])]
        assert changed, (family, method)


@pytest.mark.parametrize("between", ["sft", "reuse"])
def test_accelerated_vaccine_searches_every_tau_steps(tmp_path, between):
    trainer = make_trainer("vaccine", tmp_path, steps=7, rho=2.0, perturbation_interval=3, between_searches=between)
    searches, perturbed = [], []
    search, perturb = trainer.search_perturbation, trainer.hooks.perturb
    trainer.search_perturbation = lambda *a, **k: (searches.append(trainer.state.global_step), search(*a, **k))
    trainer.hooks.perturb = lambda p: (perturbed.append(trainer.state.global_step), perturb(p))[1]
    trainer.train()
    assert searches == [0, 3, 6]
    assert perturbed == ([0, 3, 6] if between == "sft" else list(range(7)))


def test_reused_perturbation_is_fitted_to_each_batch(tmp_path):
    trainer = make_trainer("vaccine", tmp_path, perturbation_interval=2)
    trainer._perturbation = {i: torch.ones(4, 12, 32) for i in range(4)}
    longer = trainer._fitted_perturbation({"input_ids": torch.zeros(3, 15, dtype=torch.long)})
    assert longer[0].shape == (3, 15, 32)
    assert longer[0][:, :12].eq(1).all() and longer[0][:, 12:].eq(0).all()
    shorter = trainer._fitted_perturbation({"input_ids": torch.zeros(4, 5, dtype=torch.long)})
    assert shorter[2].shape == (4, 5, 32) and shorter[2].eq(1).all()


def test_perturbation_raises_the_loss_and_its_opposite_lowers_it(tmp_path):
    """To first order the worst case must be worse than no perturbation, and -e better: a sign
    error in the ascent direction makes pass 2 train on an easier problem, and fails here."""
    trainer = make_trainer("vaccine", tmp_path, model=_lora_b_nonzero(lora_model()), rho=0.05)
    model, batch = trainer.model, token_batch()
    trainer.search_perturbation(model, batch)
    with torch.no_grad():
        clean = model(**batch).loss.item()
        with trainer.hooks.perturb(trainer._perturbation):
            worse = model(**batch).loss.item()
        with trainer.hooks.perturb({i: -e for i, e in trainer._perturbation.items()}):
            better = model(**batch).loss.item()
    assert worse > clean > better
    # First order: the rise is rho times the gradient norm, up to second-order terms.
    grads, _ = attention_output_grads(trainer.hooks, range(4), lambda: model(**batch).loss)
    assert worse - clean == pytest.approx(0.05 * gradient_norm(grads).item(), rel=0.1)


@pytest.mark.parametrize("scope", ["reference", "drawn"])
def test_checkpointing_the_unselected_layers_leaves_the_update_unchanged(tmp_path, scope):
    """S < L with probes and redraws inside the run: the same weights with and without activation
    checkpointing (the probe checkpoints every layer, so it is covered too)."""
    states = []
    for checkpoint in (True, False):
        trainer = make_trainer("t-vaccine", tmp_path / str(checkpoint), model=_lora_b_nonzero(lora_model(layers=6)),
                               steps=4, rho=2.0, layers_per_draw=2, resample_every=2, probe_every=2,
                               probe_batch_size=4, trainable_scope=scope, checkpoint_unselected=checkpoint)
        assert trainer._checkpointing is checkpoint
        trainer.train()
        states.append((lora_state(trainer.model), trainer.layer_history))
    assert states[0][1] == states[1][1]  # same probes, same draws
    for name, value in states[0][0].items():
        torch.testing.assert_close(states[1][0][name], value, rtol=1e-5, atol=1e-6)


def test_probe_reads_the_harmful_data_and_weights_its_micro_batches(tmp_path):
    """8 harmful samples probed in two micro-batches of 4 give the norms of one batch of those 8."""
    trainer = make_trainer("t-vaccine", tmp_path, model=_lora_b_nonzero(lora_model()), probe_batch_size=8,
                           probe_samples=8)
    trainer.probe(trainer.model)
    event = trainer.layer_history[-1]
    assert sorted(event["samples"]) == list(range(8))
    batch = stack_collator([trainer.harmful_dataset[i] for i in event["samples"]])
    grads, _ = attention_output_grads(trainer.hooks, range(4), lambda: trainer.model(**batch).loss)
    expected = torch.stack([grads[i].double().pow(2).sum().sqrt() for i in range(4)])
    torch.testing.assert_close(torch.tensor(event["norms"], dtype=torch.float64), expected, rtol=1e-4, atol=1e-8)
    torch.testing.assert_close(trainer.sampler.probabilities, expected / expected.sum(), rtol=1e-4, atol=1e-8)


def test_probes_draw_new_samples_from_the_pool_until_it_is_used_up():
    stream = ProbeStream(pool=5, seed=0)
    first = [stream.next(1)[0] for _ in range(5)]
    assert sorted(first) == [0, 1, 2, 3, 4]  # an epoch over the pool, then a new order
    assert all(0 <= i < 5 for i in stream.next(3))
    state = stream.state_dict()
    upcoming = [stream.next(2) for _ in range(4)]
    clone = ProbeStream(pool=5, seed=99)
    clone.load_state_dict(state)
    assert [clone.next(2) for _ in range(4)] == upcoming
    assert sorted(ProbeStream(pool=3, seed=0).next(10)) == [0, 1, 2]  # never more than the pool
