"""The cost benchmarks on tiny models: the shape builder, the step-cost table and the generation timer."""

import json
import os
import statistics
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import generation_speed  # noqa: E402
import step_cost  # noqa: E402

# Parameter counts of the published models (embeddings and head included).
PUBLISHED = {"llama-2-7b": 6.74e9, "llama-2-13b": 13.02e9, "qwen2-7b": 7.62e9}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_shipped_shapes_have_the_published_size(name):
    model = step_cost.build_shape_model(name, torch.bfloat16, "meta")
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(PUBLISHED[name], rel=0.005)
    assert model.dtype == torch.bfloat16


def test_step_cost_on_the_tiny_shape(tmp_path):
    settings = step_cost.Settings(shape="tiny", batch=2, seq_len=16, steps=3, cpu=True,
                                  methods=("sft", "vaccine", "t-vaccine"), layers_per_draw=(2,),
                                  trainable_scopes=("reference", "drawn"))
    settings.validate()
    results = step_cost.run_jobs(settings, spawn=False, log=lambda line: None)
    out = step_cost.write_report(results, settings, "python benchmarks/step_cost.py --shape tiny", tmp_path / "out")

    saved = json.loads((out / "step_cost.json").read_text())["results"]
    by_method = {r.get("trainable_scope") or r["method"]: r for r in saved}
    assert list(by_method) == ["sft", "vaccine", "reference", "drawn"]
    for result in saved:
        times = result["step_times_s"]
        assert result["layers"] == 4 and len(times) == 3 and result["warmup_step_s"] > 0  # the warm-up is not timed
        assert result["median_step_s"] == pytest.approx(statistics.median(times))
        assert result["step_s"]["min"] == min(times) and result["step_s"]["max"] == max(times)
        assert result["step_s"]["sd"] == pytest.approx(statistics.stdev(times))
        assert result["lora"]["dropout"] == 0.1 and result["precision"] in ("fp32", "bf16 (autocast, fp32 weights)")
        # One peak per timed step, each read after resetting the high-water mark (Linux) at the step's start.
        peaks = result["step_peaks"]["peak_rss_bytes"]
        assert len(peaks) == 3 and result["peak_rss_bytes"] == max(peaks) > 0
        for key in ("median_step_s", "peak_rss_bytes"):
            for base in ("sft", "vaccine"):
                assert result["ratios"][key][base] == pytest.approx(result[key] / by_method[base][key])
    assert by_method["sft"]["phases"]["pass1_s"] == 0 < by_method["vaccine"]["phases"]["pass1_s"]
    for scope in ("reference", "drawn"):
        tvaccine = by_method[scope]
        assert tvaccine["phases"]["probe_once_s"] > 0 and tvaccine["phases"]["pass2_s"] > 0
        assert tvaccine["layers_per_draw"] == 2 and len(tvaccine["selected_layers"]) == 2
    assert by_method["drawn"]["uncheckpointed_layers"] == by_method["drawn"]["selected_layers"]

    text = (out / "step_cost.md").read_text()
    assert text.startswith("```\npython benchmarks/step_cost.py --shape tiny\n```\n\ncommit ")
    vaccine = by_method["vaccine"]
    spread = vaccine["step_s"]
    assert (f"| Vaccine (rho 2) | {vaccine['median_step_s']:.3f} | {spread['min']:.3f}–{spread['max']:.3f}, "
            f"sd {spread['sd']:.3f} | {vaccine['ratios']['median_step_s']['sft']:.2f} | 1.00 | "
            f"{vaccine['peak_rss_bytes'] / 2**30:.2f} |") in text
    assert "| T-Vaccine S=2/4, reference scope (rho 3) |" in text and "| T-Vaccine S=2/4, drawn scope (rho 3) |" in text


def test_step_peak_memory_is_reset_every_step():
    """A step that allocates less than the one before it reads its own, lower peak (Linux). In a fresh process:
    a long test session's allocator keeps freed pages resident, which would hide the first step's peak."""
    import subprocess
    import sys

    code = """
import torch, step_cost
memory = step_cost.StepMemory(torch.device("cpu"))
if not memory.per_step:
    print("skip"); raise SystemExit
memory.reset()
big = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
first = memory.peak()["peak_rss_bytes"]
del big
memory.reset()
small = torch.ones(2**20 // 4)
second = memory.peak()["peak_rss_bytes"]
print(first - second)
"""
    bench = str(Path(__file__).resolve().parents[1] / "benchmarks")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join([bench, os.environ.get("PYTHONPATH", "")])})
    assert out.returncode == 0, out.stderr
    if out.stdout.strip() == "skip":
        pytest.skip("no /proc/self/clear_refs here")
    assert int(out.stdout.strip().splitlines()[-1]) > 32 * 2**20


@pytest.mark.parametrize("argv, message", [
    (["--shape", "llama-9b"], "unknown shape 'llama-9b'"),
    (["--shape", "tiny", "--steps", "0"], "steps must be >= 1"),
    (["--shape", "tiny", "--methods", "sft,magic"], "methods must be distinct names"),
    (["--shape", "tiny", "--layers-per-draw", "2,9"], "S = 9 layers per draw, but tiny has 4 layers"),
    (["--shape", "tiny", "--layers-per-draw", "2,x"], "not a comma-separated list of int"),
    (["--shape", "tiny", "--trainable-scopes", "all"], "unknown trainable scope 'all'"),
    (["--shape", "tiny", "--methods", "sft", "--layers-per-draw", "2"], "T-Vaccine options are given but"),
])
def test_step_cost_refuses_bad_input_before_running(tmp_path, capsys, argv, message):
    assert step_cost.main([*argv, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"step_cost: error: {message}") and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_generation_speed_reports_the_speedup(tmp_path):
    code = generation_speed.main(["--model", "tiny-random-llama", "--cpu", "--prompts", "6", "--max-new-tokens", "3",
                                  "--batch-size", "3", "--out", str(tmp_path)])
    assert code == 0
    report = json.loads((tmp_path / "cpu.json").read_text())
    result = report["result"]
    assert len(result["single"]["answers"]) == len(result["batched"]["answers"]) == 6
    assert result["single"]["batch_size"] == 1 and result["batched"]["batch_size"] == 3
    assert result["speedup"] == pytest.approx(result["single"]["wall_s"] / result["batched"]["wall_s"])
    assert 0 <= result["identical_answers"] <= 6
    text = (tmp_path / "cpu.md").read_text()
    assert text.startswith("```\npython benchmarks/generation_speed.py --model tiny-random-llama")
    assert f"| batched | 3 | {result['batched']['wall_s']:.2f} |" in text and f"{result['speedup']:.2f}x |" in text


def test_generation_speed_refuses_more_prompts_than_the_data_holds(tmp_path, capsys):
    code = generation_speed.main(["--model", "tiny-random-llama", "--prompts", "100000", "--out", str(tmp_path / "g")])
    assert code == 2
    assert "generation_speed: error: builtin:safety@eval holds 210 prompts, 100000 asked for" in capsys.readouterr().err
    assert not (tmp_path / "g").exists()
