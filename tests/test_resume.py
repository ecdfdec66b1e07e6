"""Kill an alignment / attack after k steps, resume it, and reach the uninterrupted result."""

import dataclasses
import json

import pytest
from safetensors.torch import load_file
from transformers import TrainerCallback

from tvaccine.alignment import AlignSpec, run_alignment
from tvaccine.attack import AttackSpec, run_attack
from tvaccine.errors import UserError


class InterruptAt(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise KeyboardInterrupt


def adapter_weights(directory):
    return load_file(str(directory / "adapter" / "adapter_model.safetensors"))


def assert_same_adapter(a, b):
    first, second = adapter_weights(a), adapter_weights(b)
    assert first.keys() == second.keys()
    for name in first:
        assert (first[name] - second[name]).abs().max().item() < 1e-6, name


@pytest.mark.parametrize("method", ["vaccine", "t-vaccine"])
def test_resumed_alignment_equals_uninterrupted(tmp_path, method):
    train = {"max_steps": 6, "per_device_train_batch_size": 4, "save_steps": 2, "disable_tqdm": True,
             "use_cpu": True}
    options = dict(layers_per_draw=2, resample_every=2, probe_every=3, probe_samples=4) if method == "t-vaccine" else {}
    spec = AlignSpec(method=method, model="tiny-random-llama", n_safety=12, n_benign=12, max_length=512,
                     lora_dropout=0.1, seed=3, train=train, method_options=options)
    run_alignment(spec, tmp_path / "straight", log=lambda *a: None)
    with pytest.raises(KeyboardInterrupt, match="checkpoint of step 2 .* --resume"):
        run_alignment(spec, tmp_path / "cut", log=lambda *a: None, callbacks=[InterruptAt(3)])
    assert not (tmp_path / "cut").exists() and (tmp_path / "cut.partial" / "checkpoint-2").is_dir()
    assert not (tmp_path / "cut.lock").exists()
    logged = []
    summary = run_alignment(spec, tmp_path / "cut", resume=True, log=logged.append)
    assert_same_adapter(tmp_path / "straight", tmp_path / "cut")
    assert not (tmp_path / "cut.partial").exists()
    assert any("from step 2" in line for line in logged)
    # The summary counts the whole run, not only the part after the resume.
    assert (summary["steps"], summary["resumed_from_step"], summary["timed_steps"]) == (6, 2, 4)
    assert json.loads((tmp_path / "cut" / "summary.json").read_text())["steps"] == 6


def attack_spec(**train):
    return AttackSpec(model="tiny-random-llama", n=20, p=0.5, max_length=512,
                      train={"max_steps": 4, "per_device_train_batch_size": 5, "learning_rate": 1e-3,
                             "use_cpu": True, **train})


def test_resumed_attack_equals_uninterrupted(tmp_path):
    spec = attack_spec(save_steps=2)
    run_attack(spec, tmp_path / "straight", log=lambda *a: None)
    with pytest.raises(KeyboardInterrupt):
        run_attack(spec, tmp_path / "cut", log=lambda *a: None, callbacks=[InterruptAt(3)])
    _, _, summary = run_attack(spec, tmp_path / "cut", resume=True, log=lambda *a: None)
    assert_same_adapter(tmp_path / "straight", tmp_path / "cut")
    assert (summary["steps"], summary["resumed_from_step"]) == (4, 2)


def test_resume_refuses_a_different_config_or_nothing_to_resume(tmp_path):
    spec = attack_spec(save_steps=2)
    with pytest.raises(UserError, match="nothing to resume"):
        run_attack(spec, tmp_path / "a", resume=True)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(KeyboardInterrupt):
        run_attack(spec, tmp_path / "a", log=lambda *a: None, callbacks=[InterruptAt(3)])
    other = dataclasses.replace(spec, p=0.25)
    with pytest.raises(UserError, match="different configuration"):
        run_attack(other, tmp_path / "a", resume=True)


def test_an_interrupt_before_the_first_checkpoint_keeps_nothing_and_does_not_offer_resume(tmp_path):
    with pytest.raises(KeyboardInterrupt) as caught:
        run_attack(attack_spec(save_steps=3), tmp_path / "a", log=lambda *a: None, callbacks=[InterruptAt(2)])
    assert "--resume" not in caught.value.hint and "nothing was kept" in caught.value.hint
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(KeyboardInterrupt) as caught:  # checkpoints off: the hint says how to turn them on
        run_attack(attack_spec(), tmp_path / "a", log=lambda *a: None, callbacks=[InterruptAt(2)])
    assert "--save-steps" in caught.value.hint and "--resume" not in caught.value.hint
    assert list(tmp_path.iterdir()) == []
