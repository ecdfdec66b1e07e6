"""The T-Vaccine study script end to end on a tiny random model: seeds, variants, summary, plots."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def tiny_study_config(path: Path) -> Path:
    config = yaml.safe_load((ROOT / "benchmarks" / "tvaccine_study.yaml").read_text())
    config.update(model="tiny-random-llama", isolate_alignment=False)
    config["align"].update(n_safety=8, n_benign=8, max_length=512)
    config["align"]["train"] = {"learning_rate": 1e-3, "max_steps": 2, "per_device_train_batch_size": 4,
                                "disable_tqdm": True}
    for name, options in config["align"]["method_options"].items():
        if "layers_per_draw" in options:
            options.update(layers_per_draw=4 if name == "tv-s30" else 2, probe_every=1, probe_samples=4)
    config["attack"].update(n=10, max_length=512, train={"learning_rate": 1e-3, "max_steps": 2,
                                                         "per_device_train_batch_size": 5})
    config["progress"] = {"every": 1, "n_harmful": 3, "n_task": 2, "n_borderline": 2}
    config["evaluate"].update(n_harmful=3, n_task=2, n_borderline=2, max_new_tokens_harmful=4, max_new_tokens_task=2,
                              forward_harmful=None)  # the preset's BeaverTails path is relative to the repository
    config["align"]["benign_answers"] = "given"  # the tiny model's own answers rarely end
    path.write_text(yaml.safe_dump(config))
    return path


TINY_METHODS = "none,sft,vaccine,t-vaccine,tv-s30,tv-excl0"


def run_study(tmp_path, *args):
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / "tvaccine_study.py"), *args],
                          capture_output=True, text=True, cwd=tmp_path, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})  # tiny models: one thread is faster


def test_study_runs_seeds_and_variants_and_summarises(tmp_path):
    config = tiny_study_config(tmp_path / "study.yaml")
    done = run_study(tmp_path, "--config", str(config), "--results", "res", "--out", "out", "--seeds", "1", "2",
                     "--variant-seeds", "1", "--methods", TINY_METHODS)
    assert done.returncode == 0, done.stderr[-2000:]
    study = json.loads((tmp_path / "out" / "study.json").read_text())
    seeds = {s["method"]: s["seeds"] for s in study["summary"]}
    assert seeds == {"none": [1, 2], "sft": [1, 2], "vaccine": [1, 2], "t-vaccine": [1, 2], "tv-s30": [1],
                     "tv-excl0": [1]}
    for summary in study["summary"]:
        assert len(summary["hs_auc"]) == len(summary["seeds"])
        assert all(0 <= v <= 100 for v in summary["hs_auc"])
    sft = next(s for s in study["summary"] if s["method"] == "sft")
    assert sft["step_vs_sft"] == pytest.approx(1.0)
    text = (tmp_path / "out" / "study.md").read_text()
    assert "| t-vaccine | 2 |" in text and "| tv-excl0 | 1 |" in text and " ± " in text
    assert (tmp_path / "out" / "study_curves.png").stat().st_size > 0
    assert (tmp_path / "out" / "study_layer_probabilities.png").stat().st_size > 0
    # The variant really ran as configured: layer 0 never drawn, S = all 4 layers.
    history = json.loads((tmp_path / "res" / "seed-1" / "align" / "tv-excl0" / "layer_history.json").read_text())
    assert all(0 not in e["selected"] for e in history if e["event"] == "draw")
    history = json.loads((tmp_path / "res" / "seed-1" / "align" / "tv-s30" / "layer_history.json").read_text())
    assert all(e["selected"] == [0, 1, 2, 3] for e in history if e["event"] == "draw")
    # Summarising again from the saved runs gives the same numbers.
    again = run_study(tmp_path, "--config", str(config), "--results", "res", "--out", "out2", "--seeds", "1", "2",
                      "--variant-seeds", "1", "--methods", TINY_METHODS, "--summarise-only")
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads((tmp_path / "out2" / "study.json").read_text())["summary"] == study["summary"]


def test_study_refuses_an_unknown_method_with_one_line(tmp_path):
    done = run_study(tmp_path, "--methods", "sft,magic", "--results", "res")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == ["tvaccine_study: error: not in "
                                                f"{ROOT / 'benchmarks' / 'tvaccine_study.yaml'}: magic"]
    assert not (tmp_path / "res").exists()


def test_study_base_point_is_the_cpu_preset():
    """The study's SFT / Vaccine / T-Vaccine and its data, attack and evaluation are the cpu preset's, so
    the preset's runs are points of the study (and ``--reuse results/cpu`` can reuse them)."""
    study = yaml.safe_load((ROOT / "benchmarks" / "tvaccine_study.yaml").read_text())
    preset = yaml.safe_load((ROOT / "src" / "tvaccine" / "presets" / "cpu.yaml").read_text())
    for key in ("model", "seed", "evaluate_before_attack", "attack", "progress", "evaluate"):
        assert study[key] == preset[key], key
    study_align, preset_align = dict(study["align"]), dict(preset["align"])
    study_options, preset_options = study_align.pop("method_options"), preset_align.pop("method_options")
    assert study_align == preset_align
    for method, options in preset_options.items():
        assert study_options[method] == options
    assert all(study_options[m]["method"] == "t-vaccine" for m in study["methods"] if m.startswith("tv-"))


def test_run_config_variants_resolve_to_their_method_and_bad_ones_are_refused():
    from tvaccine.errors import UserError
    from tvaccine.pipeline import Plan

    base = {"model": "tiny-random-llama", "attack": {"n": 10, "train": {"max_steps": 1}},
            "align": {"method_options": {"t-vaccine": {"rho": 3.0},
                                         "tv-small": {"method": "t-vaccine", "rho": 0.5, "exclude_layers": [0]}}}}
    plan = Plan({**base, "methods": ["none", "t-vaccine", "tv-small"]})
    assert plan.base_methods == {"none": "none", "t-vaccine": "t-vaccine", "tv-small": "t-vaccine"}
    spec = plan.align_specs["tv-small"]
    assert spec.method == "t-vaccine" and spec.method_options == {"rho": 0.5, "exclude_layers": [0]}
    assert plan.align_specs["t-vaccine"].method_options == {"rho": 3.0}
    assert spec.args.rho == 0.5 and spec.args.exclude_layers == [0]
    with pytest.raises(UserError, match="unknown method 'tv-other'.*variant"):
        Plan({**base, "methods": ["tv-other"]})
    with pytest.raises(UserError, match="unknown method 'tv-none'"):
        Plan({**base, "methods": ["tv-none"], "align": {"method_options": {"tv-none": {"method": "none"}}}})
    with pytest.raises(UserError, match="'vaccine' is a method itself"):
        Plan({**base, "methods": ["vaccine"], "align": {"method_options": {"vaccine": {"method": "t-vaccine"}}}})
    with pytest.raises(UserError, match="lists a method twice"):
        Plan({**base, "methods": ["sft", "sft"]})
    with pytest.raises(UserError, match="t-vaccine has no option 'wrong'"):
        Plan({**base, "methods": ["tv-bad"], "align": {"method_options": {"tv-bad": {"method": "t-vaccine",
                                                                                     "wrong": 1}}}})
    # A variant's training arguments go in its own `train`, not among the method's options.
    plan = Plan({**base, "methods": ["tv-long"], "align": {"train": {"max_steps": 2}, "method_options": {
        "tv-long": {"method": "t-vaccine", "train": {"max_steps": 8}}}}})
    assert plan.align_specs["tv-long"].args.max_steps == 8
    with pytest.raises(UserError, match="max_steps is a training argument: set it in train"):
        Plan({**base, "methods": ["tv-long"], "align": {"method_options": {"tv-long": {"method": "t-vaccine",
                                                                                       "max_steps": 8}}}})
