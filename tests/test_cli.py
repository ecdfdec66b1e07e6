"""Each sub-command end to end on the tiny random model."""

import json

import pytest

from tvaccine.cli import main

TINY = ["--model", "tiny-random-llama"]


def test_data_show_lists_splits_categories_and_examples(capsys):
    assert main(["data", "show", "builtin:safety", "--n", "1"]) == 0
    out = capsys.readouterr().out
    assert "split align: 350 records" in out and "split eval: 210 records" in out
    assert out.count("animal_abuse: ") == 3  # one count line per split
    assert "### Instruction:" in out and "### Response:" in out
    assert main(["data", "list"]) == 0
    listed = capsys.readouterr().out
    for name in ("builtin", "beavertails", "sst2", "agnews", "gsm8k", "file"):
        assert name in listed


@pytest.fixture(scope="module")
def aligned(tmp_path_factory):
    out = tmp_path_factory.mktemp("align") / "tv"
    assert main(["align", "--method", "t-vaccine", "--out", str(out), "--max-steps", "3", "--n-safety", "8",
                 "--n-benign", "8", "--max-length", "512", "--layers-per-draw", "2", "--resample-every", "2",
                 "--probe-every", "2", "--probe-samples", "4", "--batch-size", "4", *TINY]) == 0
    return out


def test_align_writes_adapter_config_log_history_and_costs(aligned):
    assert (aligned / "adapter" / "adapter_config.json").is_file()
    summary = json.loads((aligned / "summary.json").read_text())
    assert summary["method"] == "t-vaccine" and summary["samples"] == 16
    assert summary["peak_memory_bytes"] > 0 and summary["mean_step_s"] > 0
    log = json.loads((aligned / "train_log.json").read_text())
    assert sum("grad_norm_h" in entry for entry in log) == 3
    history = json.loads((aligned / "layer_history.json").read_text())
    assert [e["event"] for e in history] == ["probe", "draw", "probe", "draw"]
    spec = json.loads((aligned / "spec.json").read_text())
    assert spec["train"]["layers_per_draw"] == 2
    assert not (aligned.parent / "tv.partial").exists()


def test_generate_with_an_adapter(aligned, capsys):
    assert main(["generate", "hello", "--adapter", str(aligned / "adapter"), "--max-new-tokens", "3", *TINY]) == 0


def test_attack_then_evaluate_then_rescore(aligned, tmp_path, capsys):
    attack = tmp_path / "attack"
    assert main(["attack", "--adapter", str(aligned / "adapter"), "--out", str(attack), "--n", "10", "--p", "0.5",
                 "--max-steps", "1", "--max-length", "512", "--batch-size", "5", *TINY]) == 0
    mixture = [json.loads(line) for line in (attack / "mixture.jsonl").read_text().splitlines()]
    assert len(mixture) == 10 and sum(r["is_harmful"] for r in mixture) == 5
    evaluation = tmp_path / "eval"
    args = ["evaluate", "--adapter", str(aligned / "adapter"), "--attack-adapter", str(attack / "adapter"),
            "--out", str(evaluation), "--n-harmful", "3", "--n-task", "3", "--n-borderline", "2",
            "--max-new-tokens-harmful", "3", "--max-new-tokens-task", "3", *TINY]
    assert main(args) == 0
    scores = json.loads((evaluation / "scores.json").read_text())
    assert scores["n_harmful"] == 3 and scores["n_task"] == 3 and scores["n_borderline"] == 2
    assert main(args) == 2  # scores exist: no silent overwrite
    assert main(["evaluate", "--out", str(evaluation), "--rescore", "--n-harmful", "3"]) == 0
    assert json.loads((evaluation / "scores.json").read_text()) == scores


def test_layers_probe_prints_norms_and_saves_a_chart(tmp_path, capsys):
    assert main(["layers", "--out", str(tmp_path), "--samples", "4", "--max-length", "512", *TINY]) == 0
    result = json.loads((tmp_path / "layer_norms.json").read_text())
    assert len(result["norms"]) == 4 and sum(result["probabilities"]) == pytest.approx(1.0)
    assert (tmp_path / "layer_norms.png").stat().st_size > 1000
    assert capsys.readouterr().out.count("layer ") >= 4
