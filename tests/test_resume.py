"""Kill an alignment / attack after k steps, resume it, and reach the uninterrupted result."""

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
    train = {"max_steps": 6, "per_device_train_batch_size": 4, "save_strategy": "steps", "save_steps": 2,
             "disable_tqdm": True, "use_cpu": True}
    if method == "t-vaccine":
        train.update(layers_per_draw=2, resample_every=2, probe_every=3, probe_samples=4)
    spec = AlignSpec(method=method, model="tiny-random-llama", n_safety=12, n_benign=12, max_length=512,
                     lora_dropout=0.1, seed=3, train=train)
    run_alignment(spec, tmp_path / "straight", log=lambda *a: None)
    with pytest.raises(KeyboardInterrupt):
        run_alignment(spec, tmp_path / "cut", log=lambda *a: None, callbacks=[InterruptAt(3)])
    assert not (tmp_path / "cut").exists() and (tmp_path / "cut.partial" / "checkpoint-2").is_dir()
    run_alignment(spec, tmp_path / "cut", resume=True, log=lambda *a: None)
    assert_same_adapter(tmp_path / "straight", tmp_path / "cut")
    assert not (tmp_path / "cut.partial").exists()


def test_resumed_attack_equals_uninterrupted(tmp_path):
    spec = AttackSpec(model="tiny-random-llama", n=20, p=0.5, max_steps=4, batch_size=5, max_length=512,
                      learning_rate=1e-3, save_steps=2, use_cpu=True)
    run_attack(spec, tmp_path / "straight", log=lambda *a: None)
    with pytest.raises(KeyboardInterrupt):
        run_attack(spec, tmp_path / "cut", log=lambda *a: None, callbacks=[InterruptAt(3)])
    run_attack(spec, tmp_path / "cut", resume=True, log=lambda *a: None)
    assert_same_adapter(tmp_path / "straight", tmp_path / "cut")


def test_resume_refuses_a_different_config_or_nothing_to_resume(tmp_path):
    spec = AttackSpec(model="tiny-random-llama", n=20, p=0.5, max_steps=4, batch_size=5, max_length=512,
                      save_steps=2, use_cpu=True)
    with pytest.raises(UserError, match="nothing to resume"):
        run_attack(spec, tmp_path / "a", resume=True)
    with pytest.raises(KeyboardInterrupt):
        run_attack(spec, tmp_path / "a", log=lambda *a: None, callbacks=[InterruptAt(3)])
    other = AttackSpec(**{**spec.__dict__, "p": 0.25})
    with pytest.raises(UserError, match="different configuration"):
        run_attack(other, tmp_path / "a", resume=True)
