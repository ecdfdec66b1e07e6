"""A 2-process gloo run (torchrun) of every method equals a 1-process run with the same global batch."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

WORKER = Path(__file__).parent / "ddp_worker.py"


def run(command, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src"), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.parametrize("method", ["sft", "vaccine", "t-vaccine"])
def test_two_process_run_matches_one_process_with_the_same_global_batch(tmp_path, method):
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    run([*torchrun, str(WORKER), method, str(tmp_path / "ddp"), "2"], tmp_path)
    run([sys.executable, str(WORKER), method, str(tmp_path / "single"), "4"], tmp_path)
    rank0 = load_file(str(tmp_path / "ddp" / "rank0.safetensors"))
    rank1 = load_file(str(tmp_path / "ddp" / "rank1.safetensors"))
    single = load_file(str(tmp_path / "single" / "rank0.safetensors"))
    initial_b = [n for n in single if "lora_B" in n]
    assert any(single[n].abs().max() > 0 for n in initial_b)  # the run did train
    for name in single:
        assert (rank0[name] - rank1[name]).abs().max().item() == 0, name
        # Adam divides by sqrt(v): float-rounding differences of the all-reduce become ~1e-5 here
        assert (rank0[name] - single[name]).abs().max().item() < 1e-4, name
    if method == "t-vaccine":  # the same layers on every rank, and as in one process
        histories = [json.loads((tmp_path / d / f).read_text()) for d, f in
                     [("ddp", "rank0.layers"), ("ddp", "rank1.layers"), ("single", "rank0.layers")]]
        draws = [[e["selected"] for e in h if e["event"] == "draw"] for h in histories]
        assert draws[0] == draws[1] == draws[2] and len(draws[0]) == 3
        probabilities = [[e["probabilities"] for e in h if e["event"] == "probe"] for h in histories]
        assert probabilities[0] == probabilities[1]
        for ddp_probe, single_probe in zip(probabilities[0], probabilities[2], strict=True):
            assert ddp_probe == pytest.approx(single_probe, rel=1e-6)
