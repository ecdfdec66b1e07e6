"""The whole experiment on the smoke preset, the report, and re-scoring saved generations."""

import json
import os
import shutil
import time

import pytest
import torch
import yaml

from tvaccine.cli import main
from tvaccine.evaluation.evaluate import EvalSpec, score_generations
from tvaccine.evaluation.robustness import hs_auc
from tvaccine.results_io import read_jsonl

SECRET = "hf_tvaccineTestSecret0123456789"


@pytest.fixture(scope="module")
def smoke_results(tmp_path_factory):
    results = tmp_path_factory.mktemp("smoke")
    # CPU time on one thread: a loaded machine stretches wall time, and idle OpenMP threads spin.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    start = time.process_time()
    saved = os.environ.get("HF_TOKEN")
    os.environ["HF_TOKEN"] = SECRET  # must never reach an output file
    try:
        assert main(["run", "--preset", "smoke", "--results", str(results)]) == 0
    finally:
        os.environ.pop("HF_TOKEN") if saved is None else os.environ.__setitem__("HF_TOKEN", saved)
        torch.set_num_threads(threads)
    return results, time.process_time() - start


def test_no_token_in_any_output_file(smoke_results):
    results, _ = smoke_results
    files = [p for p in results.rglob("*") if p.is_file()]
    assert len(files) > 50
    assert not [p for p in files if SECRET.encode() in p.read_bytes()]
    assert not list(results.rglob("*.bin")) and not list(results.rglob("*.pt*"))  # safetensors only


def test_smoke_preset_runs_every_method_and_writes_the_report(smoke_results):
    results, cpu_seconds = smoke_results
    assert cpu_seconds < 90
    rows = read_jsonl(results / "results.jsonl")
    assert [(r["method"], r["p"]) for r in rows] == [(m, p) for m in ("none", "sft", "vaccine", "t-vaccine",
                                                                                   "repnoise", "tar")
                                                       for p in (0.1, 0.5)]
    for row in rows:
        assert 0 <= row["after_harmful_score"] <= 100 and 0 <= row["after_finetune_accuracy"] <= 100
        assert row["attack_steps"] == 2
        # The attack is scored before its first step, after each step (progress every 1) and at its end.
        assert [point["step"] for point in row["curve"]] == [0, 1, 2]
        assert row["hs_auc"] == pytest.approx(hs_auc(row["curve"])) and row["curve_steps"] == 2
    assert all(r["align_mean_step_s"] > 0 for r in rows if r["method"] != "none")
    report = (results / "report.md").read_text()
    for label in ("Non-aligned", "SFT", "Vaccine", "T-Vaccine", "RepNoise", "TAR"):
        assert f"| {label} |" in report
    assert "## Robustness over the attack" in report and "HS-AUC" in report
    assert (results / "hs_vs_steps.png").stat().st_size > 0
    assert (results / "hs_fa.png").stat().st_size > 0 and (results / "hs_fa_vs_p.png").stat().st_size > 0
    for name in ("run_config.yaml", "environment.json", "timing.json"):
        assert (results / name).is_file()
    history = json.loads((results / "align" / "t-vaccine" / "layer_history.json").read_text())
    assert [e["event"] for e in history][:2] == ["probe", "draw"]


def test_saved_generations_rescore_to_the_same_numbers(smoke_results):
    results, _ = smoke_results
    eval_dir = results / "attack" / "sft" / "sentiment_p0.5_n20_lr0.0001_steps2" / "eval"
    saved = json.loads((eval_dir / "scores.json").read_text())
    spec = EvalSpec(**json.loads((eval_dir / "eval_spec.json").read_text()))
    assert score_generations(eval_dir, spec) == saved
    generations = read_jsonl(eval_dir / "generations_harmful.jsonl")
    assert len(generations) == 6 and all("generation" in g for g in generations)


def test_rerun_reuses_finished_stages(smoke_results):
    results, _ = smoke_results
    before = (results / "align" / "sft" / "summary.json").stat().st_mtime_ns
    start = time.perf_counter()
    assert main(["run", "--preset", "smoke", "--results", str(results)]) == 0
    assert (results / "align" / "sft" / "summary.json").stat().st_mtime_ns == before
    assert time.perf_counter() - start < 20


def test_a_copied_results_directory_still_reuses_its_stages(smoke_results, tmp_path, capsys):
    results, _ = smoke_results
    copy = tmp_path / "copy"
    shutil.copytree(results, copy)
    capsys.readouterr()
    assert main(["run", "--preset", "smoke", "--results", str(copy)]) == 0
    log = capsys.readouterr().out
    assert "attacking" not in log and "found, reused" in log  # the attacks name the old adapter path
    assert read_jsonl(copy / "results.jsonl") == read_jsonl(results / "results.jsonl")


def test_a_list_of_seeds_runs_each_seed_and_reports_intervals(tmp_path):
    """`--seed 0,1`: one folder per seed, every seed's rows in the top-level results, and the report
    aggregates them (mean, sd and a 95% interval) instead of listing two rows per method."""
    results = tmp_path / "seeds"
    assert main(["run", "--preset", "smoke", "--methods", "none,sft", "--seed", "0,1",
                 "--results", str(results)]) == 0
    rows = read_jsonl(results / "results.jsonl")
    assert sorted({(r["method"], r["seed"]) for r in rows}) == [("none", 0), ("none", 1), ("sft", 0), ("sft", 1)]
    for seed in (0, 1):
        seed_rows = read_jsonl(results / f"seed-{seed}" / "results.jsonl")
        assert {r["seed"] for r in seed_rows} == {seed}
    assert yaml.safe_load((results / "run_config.yaml").read_text())["seed"] == [0, 1]
    report = (results / "report.md").read_text()
    assert "Over seeds" in report and "95%" in report and "±" in report
    assert main(["run", "--preset", "smoke", "--seed", "0,0", "--results", str(tmp_path / "twice")]) == 2
    assert not (tmp_path / "twice").exists()


def test_results_written_before_the_answer_shares_get_them_from_their_saved_scores(tmp_path):
    from tvaccine.pipeline import load_results
    from tvaccine.results_io import write_json, write_jsonl

    shares = {"refused": 10.0, "complied": 20.0, "empty": 30.0, "degenerate": 40.0}
    attack = tmp_path / "attack" / "sft" / "p0.1"
    write_jsonl(attack / "progress" / "progress.jsonl", [{"step": 0, "harmful_score": 20.0}])
    write_json(attack / "progress" / "step_00000" / "scores.json", {"harmful_score": 20.0, "answer_shares": shares})
    write_json(attack / "eval" / "scores.json", {"harmful_score": 20.0, "answer_shares": shares})
    write_jsonl(tmp_path / "results.jsonl", [{"method": "sft", "setting": "p0.1", "seed": 42,
                                              "curve": [{"step": 0, "harmful_score": 20.0}]}])
    row = load_results(tmp_path)[0]
    assert row["curve"][0]["degenerate_share"] == 40.0 and row["after_refused_share"] == 10.0
