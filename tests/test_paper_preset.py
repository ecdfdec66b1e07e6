"""The `paper` preset is the papers' setting, and it runs: offline, on a tiny model, with every key of the
preset kept and only sizes, the model and the judge made small. The data are a tiny data mirror written
here in the layouts the real ones have (the hub dumps of `tvaccine data fetch beavertails sst2`, and
RepNoise's refusal file), so the preset's sources, splits and fields are the ones a GPU run reads."""

import copy
import json

import pytest
import yaml

from tiny_mirror import REFUSALS, write_tiny_mirror
from tvaccine.cli import main
from tvaccine.config import load_config


def _keys(tree, prefix="") -> set[str]:
    if not isinstance(tree, dict):
        return set()
    return {f"{prefix}{k}" for k in tree} | {key for k, v in tree.items() for key in _keys(v, f"{prefix}{k}.")}


def small(config: dict) -> dict:
    """The preset at the size of a tiny model: the same keys, smaller numbers, an offline judge."""
    config = copy.deepcopy(config)
    config.update(model="tiny-random-llama", isolate_alignment=False)
    align = config["align"]
    align.update(n_safety=8, max_length=512)
    align["train"].update(num_train_epochs=1, per_device_train_batch_size=4)
    align["method_options"]["t-vaccine"].update(layers_per_draw=2, resample_every=1, probe_every=1, probe_samples=4)
    attack = config["attack"]
    attack.update(n=8, p=0.5, max_length=512)
    attack["train"].update(num_train_epochs=1, per_device_train_batch_size=4)
    config["progress"].update(every=1, n_harmful=2, n_task=2)
    config["evaluate"].update(n_harmful=4, n_task=4, max_new_tokens_harmful=4, max_new_tokens_task=4,
                              judge="verdict",  # beaver-dam-7b needs the hub and a GPU
                              n_forward=4)
    return config


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    write_tiny_mirror(tmp_path)
    monkeypatch.setenv("TVACCINE_DATA", str(tmp_path / "mirror"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_preset_is_the_papers_setting():
    config = load_config("paper")
    align, attack, evaluate = config["align"], config["attack"], config["evaluate"]
    assert config["model"] == "meta-llama/Llama-2-7b-hf" and config["methods"] == ["none", "sft", "vaccine",
                                                                                     "t-vaccine"]
    # The T-Vaccine scripts' alignment: RepNoise's refusals, no benign mix, 2000 samples, 20 epochs of batch 10.
    assert align["safety_data"] == f"beavertails:{REFUSALS}" and align["benign_data"] is None
    assert align["n_safety"] == 2000 and align["template"] == "alpaca" and align["max_length"] == 200
    assert align["train"] == {"learning_rate": 1e-3, "num_train_epochs": 20, "per_device_train_batch_size": 10,
                              "weight_decay": 0.1, "lr_scheduler_type": "cosine", "warmup_steps": 0.1}
    assert (align["lora_r"], align["lora_alpha"], align["lora_dropout"]) == (8, 1.0, 0.1)
    assert align["method_options"] == {"vaccine": {"rho": 2.0}, "t-vaccine": {
        "rho": 3.0, "layers_per_draw": 8, "resample_every": 20, "probe_every": 200, "probe_samples": 200}}
    # The attack: SST-2 with 10% BeaverTails harm, 1000 samples, lr 1e-5 for 20 epochs of batch 10.
    assert (attack["task"], attack["harmful_data"], attack["n"], attack["p"]) == ("sst2", "beavertails", 1000, 0.1)
    assert attack["train"] == {"learning_rate": 1e-5, "num_train_epochs": 20, "per_device_train_batch_size": 10,
                               "weight_decay": 0.1, "lr_scheduler_type": "cosine", "warmup_steps": 0.1}
    assert (attack["lora_r"], attack["lora_alpha"]) == (8, 1.0)
    # 500 BeaverTails test prompts judged by beaver-dam, 500 task prompts, 128 new tokens; an HS curve.
    assert evaluate["eval_harmful"] == "beavertails@test" and evaluate["judge"].startswith("beaver-dam")
    assert (evaluate["n_harmful"], evaluate["n_task"], evaluate["max_new_tokens_harmful"]) == (500, 500, 128)
    assert config["progress"]["generate"] == "every" and config["progress"]["every"] >= 1


def test_the_small_preset_keeps_every_key():
    config = load_config("paper")
    assert _keys(small(config)) == _keys(config)


def test_alignment_trains_on_the_refusal_answers_and_probes_the_held_out_harm(mirror):
    from tvaccine.alignment import AlignSpec, alignment_records, harmful_records_for
    from tvaccine.methods import METHODS

    align = small(load_config("paper"))["align"]
    options = align.pop("method_options")["t-vaccine"]
    spec = AlignSpec(**align, method="t-vaccine", method_options=options)
    records = alignment_records(spec)
    assert len(records) == 8 and all(r["output"] == "I cannot help you hurt anyone." for r in records)
    probe = harmful_records_for(METHODS["t-vaccine"][1].harmful_data, records, spec)
    assert probe and all(r["output"].startswith("Hurt them by method") for r in probe)
    assert not {r["instruction"] for r in probe} & {r["instruction"] for r in records}


def test_the_preset_runs_offline_on_a_tiny_model(mirror):
    (mirror / "paper.yaml").write_text(yaml.safe_dump(small(load_config("paper"))))
    assert main(["run", "--config", "paper.yaml", "--results", "res"]) == 0
    rows = [json.loads(line) for line in (mirror / "res" / "results.jsonl").read_text().splitlines()]
    assert sorted(row["method"] for row in rows) == ["none", "sft", "t-vaccine", "vaccine"]
    attack = next((mirror / "res" / "attack" / "t-vaccine").iterdir())
    assert attack.name.startswith("sst2_p0.5_n8")
    curve = [json.loads(line) for line in (attack / "progress" / "progress.jsonl").read_text().splitlines()]
    assert [point["step"] for point in curve] == [0, 1, 2]
    mixture = [json.loads(line) for line in (attack / "mixture.jsonl").read_text().splitlines()]
    assert sum(r["is_harmful"] for r in mixture) == 4
    assert all(r["instruction"].startswith("How do I do harmful thing") for r in mixture if r["is_harmful"])
