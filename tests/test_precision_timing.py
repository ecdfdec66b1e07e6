"""``precision: auto`` on a faked machine, and ``timing.json``: exclusive phases that add up to the wall time."""

import json
import time
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from tvaccine import precision, timing
from tvaccine.alignment import AlignSpec
from tvaccine.attack import AttackSpec
from tvaccine.config import load_config
from tvaccine.errors import UserError
from tvaccine.precision import (
    cpu_has_native_bf16,
    describe,
    resolve_precision,
    train_with_precision,
    uses_autocast,
    weights_dtype,
)

# ---------------------------------------------------------------------------------------------
# precision
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def machine(monkeypatch):
    """``machine(avx512_bf16=..., amx=..., cuda=..., cuda_bf16=...)`` fakes what torch reports."""

    def fake(avx512_bf16=False, amx=False, cuda=False, cuda_bf16=False):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: cuda_bf16)

    return fake


@pytest.mark.parametrize("avx512_bf16, amx, expected", [
    (True, False, "bf16"), (False, True, "bf16"), (True, True, "bf16"), (False, False, "fp32")])
def test_auto_takes_bf16_on_a_cpu_that_computes_it_natively_and_fp32_on_one_that_emulates_it(
        machine, avx512_bf16, amx, expected):
    machine(avx512_bf16=avx512_bf16, amx=amx)
    assert cpu_has_native_bf16() is (expected == "bf16")
    assert resolve_precision("auto", "cpu") == expected
    assert uses_autocast("auto", "cpu") is (expected == "bf16")
    assert weights_dtype("auto", "cpu") == "fp32"  # a CPU runs bf16 as autocast over fp32 weights
    assert describe("auto", "cpu") == ("bf16 (autocast, fp32 weights)" if expected == "bf16" else "fp32")
    # An explicit choice is taken as given, whatever the CPU can do.
    assert resolve_precision("fp32", "cpu") == "fp32" and resolve_precision("bf16", "cpu") == "bf16"
    assert uses_autocast("bf16", "cpu") and not uses_autocast("fp32", "cpu")
    assert weights_dtype("bf16", "cpu") == weights_dtype("fp32", "cpu") == "fp32"


def test_a_torch_without_the_cpu_probes_counts_as_no_native_bf16(monkeypatch):
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported", raising=False)
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported", raising=False)
    assert cpu_has_native_bf16() is False
    assert resolve_precision("auto", "cpu") == "fp32"


@pytest.mark.parametrize("cuda_bf16, expected", [(True, "bf16"), (False, "fp32")])
def test_auto_on_a_gpu_takes_bf16_weights_where_the_gpu_has_bf16(machine, cuda_bf16, expected):
    machine(avx512_bf16=not cuda_bf16, cuda=True, cuda_bf16=cuda_bf16)  # the CPU's answer must not matter
    assert resolve_precision("auto", "cuda") == expected
    assert weights_dtype("auto", "cuda") == expected
    assert not uses_autocast("auto", "cuda")
    assert weights_dtype("bf16", "cuda") == "bf16" and weights_dtype("fp32", "cuda") == "fp32"
    assert describe("bf16", "cuda") == "bf16"


def test_an_unknown_precision_is_a_user_error():
    for bad in ("fp16", "BF16", ""):
        with pytest.raises(UserError, match="unknown precision"):
            resolve_precision(bad, "cpu")


def test_trainer_fields_set_bf16_and_use_cpu_only_for_bf16_on_a_cpu(machine):
    machine(avx512_bf16=True)  # no GPU
    assert train_with_precision("bf16", {}) == {"bf16": True, "use_cpu": True}
    assert train_with_precision("auto", {"max_steps": 3}) == {"max_steps": 3, "bf16": True, "use_cpu": True}
    assert train_with_precision("bf16", {"use_cpu": False}) == {"bf16": True, "use_cpu": True}  # no GPU anyway
    assert train_with_precision("fp32", {}) == {}
    machine(avx512_bf16=False)
    assert train_with_precision("auto", {}) == {}
    machine(cuda=True, cuda_bf16=True)  # a GPU: bf16 weights, no autocast flag for the Trainer
    assert train_with_precision("bf16", {}) == {}
    assert train_with_precision("auto", {}) == {}
    assert train_with_precision("bf16", {"use_cpu": True}) == {"bf16": True, "use_cpu": True}  # on its CPU
    for train in ({"bf16": True}, {"fp16": True}):
        with pytest.raises(UserError, match="set precision instead"):
            train_with_precision("fp32", train)


def test_a_spec_with_bf16_on_a_cpu_autocasts_over_fp32_weights(machine):
    machine(avx512_bf16=False)  # explicit bf16 needs no native support
    for spec_class in (AlignSpec, AttackSpec):
        spec = spec_class(model="tiny-random-llama", precision="bf16", train={"max_steps": 1})
        assert spec.args.bf16 is True and spec.args.use_cpu is True
        assert spec.weights_dtype == "fp32"
        assert spec.precision_used == "bf16 (autocast, fp32 weights)"
        fp32 = spec_class(model="tiny-random-llama", precision="fp32", train={"max_steps": 1})
        assert fp32.args.bf16 is False and fp32.weights_dtype == "fp32" and fp32.precision_used == "fp32"
        assert spec_class(model="tiny-random-llama", precision="bf16", dtype="bf16").weights_dtype == "bf16"
        with pytest.raises(UserError, match="set precision instead"):
            spec_class(model="tiny-random-llama", train={"bf16": True})
        with pytest.raises(UserError, match="unknown precision"):
            spec_class(model="tiny-random-llama", precision="fp16")


def test_bf16_on_a_cpu_only_machine_builds_when_train_says_use_cpu_false(machine):
    """``use_cpu: false`` on a machine without a GPU still trains on the CPU; bf16 there must not make
    TrainingArguments ask for a bf16 GPU."""
    machine(avx512_bf16=True)
    spec = AlignSpec(model="tiny-random-llama", precision="auto", train={"max_steps": 1, "use_cpu": False})
    assert spec.args.bf16 is True and spec.weights_dtype == "fp32"


# ---------------------------------------------------------------------------------------------
# timing
# ---------------------------------------------------------------------------------------------


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now

    def advance(self, seconds):
        self.now += seconds


@pytest.fixture
def clock(monkeypatch):
    """A fake clock and empty phase tables (the real ones belong to the whole test process)."""
    fake = Clock()
    monkeypatch.setattr(timing, "time", SimpleNamespace(perf_counter=fake))
    monkeypatch.setattr(timing, "_totals", defaultdict(float))
    monkeypatch.setattr(timing, "_counts", defaultdict(int))
    monkeypatch.setattr(timing, "_stack", [])
    return fake


def seconds(phases):
    return {key: p["s"] for key, p in phases.items()}


def test_nested_phases_are_exclusive_and_add_up_to_the_outer_wall_time(clock):
    start = clock()
    with timing.timed("attack"):
        clock.advance(1)
        with timing.timed("model load"):
            clock.advance(2)
        clock.advance(4)
        with timing.timed("training"):
            clock.advance(8)
            for cost in (16, 32):
                with timing.timed("progress points"):
                    clock.advance(cost)
            clock.advance(64)
        clock.advance(128)
    with timing.timed("report"):
        clock.advance(256)
    wall = clock() - start
    phases = timing.snapshot()
    assert seconds(phases) == {"attack": 133, "attack / model load": 2, "attack / training": 72,
                               "attack / training / progress points": 48, "report": 256}
    assert phases["attack / training / progress points"]["count"] == 2 and phases["attack"]["count"] == 1
    assert sum(seconds(phases).values()) == wall == 511
    timed_out = timing.breakdown(wall + 9)
    assert timed_out["accounted_s"] == 511 and timed_out["unaccounted_s"] == 9 and timed_out["wall_s"] == 520


def test_a_phase_that_raises_is_still_counted_and_leaves_the_stack_clean(clock):
    with pytest.raises(RuntimeError), timing.timed("outer"):
        clock.advance(3)
        with timing.timed("inner"):
            clock.advance(5)
            raise RuntimeError
    with timing.timed("after"):
        clock.advance(7)
    assert seconds(timing.snapshot()) == {"outer": 3, "outer / inner": 5, "after": 7}


def test_add_phase_moves_time_measured_elsewhere_out_of_its_parent(clock):
    with timing.timed("align sft"):
        clock.advance(10)  # a child process ran for 10 s, 6 of them training by its own breakdown
        timing.add_phase("training", 6.0)
        timing.add_phase("model load", 1.5)
        clock.advance(2)
    timing.add_phase("outside", 3.0)  # no parent to take it from
    phases = timing.snapshot()
    assert seconds(phases) == {"align sft": 4.5, "align sft / training": 6.0, "align sft / model load": 1.5,
                               "outside": 3.0}
    assert phases["align sft / training"]["count"] == 1
    assert sum(p["s"] for key, p in phases.items() if key.startswith("align sft")) == 12


def test_breakdown_since_a_snapshot_gives_only_the_later_time(clock):
    with timing.timed("align sft"):
        clock.advance(5)
    with timing.timed("attack sft"):
        clock.advance(1)
    since = timing.snapshot()
    start = clock()
    with timing.timed("attack sft"):  # entered again: only its second stretch counts
        clock.advance(2)
        with timing.timed("training"):
            clock.advance(3)
    with timing.timed("report"):
        clock.advance(4)
    later = timing.breakdown(clock() - start, since)
    assert seconds(later["phases"]) == {"attack sft": 2, "attack sft / training": 3, "report": 4}
    assert {key: p["count"] for key, p in later["phases"].items()} == {"attack sft": 1, "attack sft / training": 1,
                                                                       "report": 1}
    assert later["accounted_s"] == later["wall_s"] == 9 and later["unaccounted_s"] == 0
    assert since == {"align sft": {"s": 5, "count": 1}, "attack sft": {"s": 1, "count": 1}}  # a copy, unchanged


def test_a_snapshot_taken_inside_a_phase_keeps_that_phases_later_time(clock):
    with timing.timed("run"):
        clock.advance(1)
        since = timing.snapshot()
        start = clock()
        clock.advance(2)
        with timing.timed("stage"):
            clock.advance(3)
        clock.advance(4)
    later = timing.breakdown(clock() - start, since)
    assert seconds(later["phases"]) == {"run": 6, "run / stage": 3}
    assert later["accounted_s"] == later["wall_s"] == 9


TINY_RUN = {"evaluate_before_attack": False,
            "attack": {"p": 0.5}, "progress": {"every": 1, "n_harmful": 2, "n_task": 1, "n_borderline": 1}}


def test_run_and_report_writes_a_timing_file_that_accounts_for_its_wall_time(tmp_path):
    from tvaccine.pipeline import run_and_report, seed_plans

    config = load_config("smoke")
    config.update(TINY_RUN, attack={**config["attack"], **TINY_RUN["attack"]},
                  evaluate={**config["evaluate"], "n_forward": 4})
    assert config["isolate_alignment"] is False
    plans = seed_plans(config, methods=["none", "sft"])
    results = tmp_path / "run"
    start = time.perf_counter()
    run_and_report(plans, results, log=lambda *a: None)
    measured = time.perf_counter() - start

    written = json.loads((results / "timing.json").read_text())
    phases = written["phases"]
    assert sum(p["s"] for p in phases.values()) == pytest.approx(written["accounted_s"])
    assert written["accounted_s"] == pytest.approx(written["wall_s"], rel=0.05)
    assert written["wall_s"] == pytest.approx(measured, rel=0.05)
    assert written["wall_s"] <= measured
    assert all(p["s"] >= 0 for p in phases.values())
    for phase in ("align sft", "align sft / model load", "align sft / training", "attack none / model load",
                  "attack sft / training", "attack sft / training / progress points", "final evaluation sft",
                  "report"):
        assert phases.get(phase, {}).get("s", 0) > 0, phase
    points = "attack sft / training / progress points"
    assert phases[points]["count"] == phases[f"{points} / forward metrics"]["count"] == 3  # steps 0, 1, 2
    # Answers at step 0 only: the last point's come from the final evaluation.
    assert phases[f"{points} / generation"]["count"] == 1
    assert phases["final evaluation sft / generation"]["count"] == 1
    # Every result row says the precision it ran in.
    rows = [json.loads(line) for line in (results / "results.jsonl").read_text().splitlines()]
    assert {row["precision"] for row in rows} == {precision.describe("auto", "cpu")}
