"""Bad input, one table: each case exits with code 2 and one line `tvaccine: error: ...` naming the
problem, prints no traceback, and leaves no new file in the working folder (each runs in its own).

The cases that get past validation (the model loads, then the configuration turns out not to fit
it) check that the work folder, the lock and any folder made for them are removed again."""

import json
import os
import re

import pytest
import torch
import yaml
from safetensors.torch import save_file

from tvaccine.cli import main

TINY = ["--model", "tiny-random-llama"]
# The cases that load the model also show its "Loading weights" bar, and `generate` its load time, on stderr.
PROGRESS_BAR = re.compile(r"\|\s*\d+/\d+ \[|^\[model loaded in [\d.]+ s\]$")
RUN = {"model": "tiny-random-llama", "methods": ["sft"], "attack": {"n": 10}}


def config(**changes) -> str:
    """A run config: the small valid one above with ``changes`` merged in (None removes a key)."""
    values = {**RUN, **changes}
    return yaml.safe_dump({k: v for k, v in values.items() if v is not None})


def align(*args):
    return ["align", "--out", "out", *TINY, *args]


def attack(*args):
    return ["attack", "--out", "out", *TINY, *args]


RUN_ARGV = ["run", "--config", "case.yaml", "--results", "res"]


def run(text: str):
    """A ``tvaccine run`` case: the arguments, and the config it writes to case.yaml first."""
    return RUN_ARGV, text


CASES = [
    # generate / data / report
    ("generate-no-prompt", ["generate"], "no prompt given"),
    ("generate-model-missing", ["generate", "hi", "--model", "/no/such/model"], "model path not found"),
    ("generate-not-gguf", ["generate", "hi", "--model", "fake.gguf"], "not a GGUF file"),
    ("generate-no-config", ["generate", "hi", "--model", "."], "no config.json"),
    ("generate-not-adapter", ["generate", "hi", "--adapter", "."], "not a LoRA adapter directory"),
    ("generate-corrupt-adapter", ["generate", "hi", "--adapter", "corrupt_adapter", *TINY], "safetensors"),
    ("prompts-file-missing", ["generate", "--prompts-file", "missing.txt"], "prompts file not found"),
    ("prompts-file-empty", ["generate", "--prompts-file", "blank.txt"], "holds no prompt"),
    ("prompts-file-not-utf8", ["generate", "--prompts-file", "latin1.txt"], "not UTF-8"),
    ("max-new-tokens-cap", ["generate", "hi", "--max-new-tokens", "100000000"], r"\[1, 4096\]"),
    ("max-new-tokens-zero", ["generate", "hi", "--max-new-tokens", "0"], r"\[1, 4096\]"),
    ("max-new-tokens-fill-context", ["generate", "hi", "--max-new-tokens", "1024", *TINY],
     "leaves no room for a prompt in the model's context of 1024 tokens"),
    ("generate-empty-adapter", ["generate", "hi", "--adapter", "empty_adapter", *TINY], "header too small"),
    ("data-unknown-source", ["data", "show", "nosuchsource"], "unknown data source"),
    ("data-unknown-builtin", ["data", "show", "builtin:nope"], "builtin"),
    ("data-missing-file", ["data", "show", "file:missing.jsonl"], "missing.jsonl"),
    ("data-not-utf8", ["data", "show", "file:latin1.jsonl"], "not UTF-8"),
    ("data-list-field", ["data", "show", "file:list_field.jsonl"], "must be text"),
    ("data-number-field", ["data", "show", "file:number_field.jsonl"], "'instruction' must be text"),
    ("data-unknown-map-key", ["data", "show", "file:broken.jsonl?foo=instruction"], "unknown key 'foo'"),
    ("data-csv-open-quote", ["data", "show", "file:open_quote.csv"], "unterminated quote"),
    ("report-no-results", ["report", "."], "no results.jsonl"),
    ("report-corrupt-results", ["report", "damaged"], "line 2"),
    ("report-empty-results", ["report", "empty_results"], "empty"),
    ("generate-adapter-bad-json", ["generate", "hi", "--adapter", "bad_json_adapter", *TINY], "invalid JSON"),
    ("generate-truncated-weights", ["generate", "hi", "--model", "cut_model"], "safetensors"),
    # align: values checked by their field types and ranges, before the model loads
    ("align-method", align("--method", "magic"), "invalid choice"),
    ("align-rho", align("--method", "vaccine", "--rho", "-1"), "rho must be >= 0"),
    ("align-S-zero", align("--method", "t-vaccine", "--layers-per-draw", "0"), "must be >= 1"),
    ("align-J-zero", align("--method", "t-vaccine", "--resample-every", "0"), "J"),
    ("align-K-zero", align("--method", "t-vaccine", "--probe-every", "0"), "K"),
    ("align-empty-probe", align("--method", "t-vaccine", "--probe-data", "file:empty.jsonl"), "empty"),
    ("align-foreign-knob", align("--method", "sft", "--rho", "1"), "does not apply"),
    ("align-unknown-source", align("--safety-data", "nosuch"), "unknown data source"),
    ("align-max-length", align("--max-length", "2"), "max_length"),
    ("align-out-not-empty", ["align", "--out", "full", *TINY], "exists and is not empty"),
    ("align-out-is-a-file", ["align", "--out", "a_file", *TINY], "not a folder"),
    ("align-out-under-a-file", ["align", "--out", "a_file/out", *TINY], "is a file"),
    ("align-max-steps-zero", align("--max-steps", "0"), "max_steps must be >= 1"),
    ("align-max-steps-negative", align("--max-steps", "-5"), "max_steps must be >= 1"),
    ("align-max-steps-text", align("--max-steps", "ten"), "expected an integer"),
    ("align-lr-negative", align("--learning-rate", "-1"), "learning_rate must be > 0"),
    ("align-lora-r-zero", align("--lora-r", "0"), "lora_r must be >= 1"),
    ("align-resume-nothing", align("--resume"), "nothing to resume"),
    ("align-model-missing", ["align", "--out", "out", "--model", "./no/model"], "model path not found"),
    ("align-set-rho-text", align("--method", "vaccine", "--set", "rho=abc"), "rho: expected a number"),
    ("align-set-warmup-text", align("--set", "warmup_steps=abc"), "warmup_steps: expected a number"),
    ("align-set-weight-decay", align("--set", "weight_decay=-1e-2"), "weight_decay must be >= 0"),
    ("align-set-no-equals", align("--set", "rho"), "key=value"),
    ("align-set-unknown", align("--set", "nosuch=1"), "not a training argument"),
    ("align-set-foreign-knob", align("--method", "sft", "--set", "rho=1"), "not a training argument"),
    ("align-set-output-dir", align("--set", "output_dir=x"), "set by the run itself"),
    ("align-set-scheduler", align("--set", "lr_scheduler_type=cosin"), "not a valid SchedulerType"),
    ("align-set-exclude-text", align("--method", "t-vaccine", "--set", "exclude_layers=a"), "expected an integer"),
    # align: found only once the model is loaded; what was created is removed again
    ("align-S-above-depth", align("--method", "t-vaccine", "--layers-per-draw", "8", "--max-steps", "1",
                                  "--n-safety", "4", "--n-benign", "4"), "only 4"),
    ("align-excluded-layer-missing", align("--method", "t-vaccine", "--set", "exclude_layers=9", "--max-steps", "1",
                                           "--n-safety", "4", "--n-benign", "4"), "does not exist"),
    # renamed options and fields
    ("old-flag-lr", align("--lr", "1e-3"), "--lr was renamed --learning-rate"),
    ("old-flag-tau", align("--method", "vaccine", "--tau", "2"), "renamed --perturbation-interval"),
    ("old-flag-cpu", align("--cpu"), "renamed --use-cpu"),
    ("old-flag-align-harmful", align("--harmful", "builtin:safety"), "renamed --probe-data"),
    ("old-flag-attack-harmful", attack("--harmful", "builtin:safety"), "renamed --harmful-data"),
    ("old-flag-attack-batch", attack("--batch-size", "4"), "renamed --per-device-train-batch-size"),
    ("old-flag-eval-every", attack("--eval-every", "2"), "renamed --progress-every"),
    ("old-flag-evaluate-harmful", ["evaluate", "--out", "out", "--harmful", "x"], "renamed --eval-harmful"),
    ("old-flag-layers-harmful", ["layers", "--harmful", "x"], "renamed --probe-data"),
    ("old-set-tau", align("--method", "vaccine", "--set", "tau=2"), "perturbation_interval"),
    # layers
    ("layers-unknown-source", ["layers", "--out", "out", "--probe-data", "nosuch"], "unknown data source"),
    ("layers-samples-zero", ["layers", "--out", "out", "--samples", "0"], "expected an integer >= 1"),
    ("layers-out-not-empty", ["layers", "--out", "full", *TINY], "exists and is not empty"),
    ("layers-answers-cut-away", ["layers", "--out", "out", "--max-length", "2", "--samples", "2", *TINY],
     "no usable harmful sample .* lose every answer token .* raise the max length"),
    # attack
    ("attack-p-above-1", attack("--p", "1.5"), r"p must be in \[0, 1\]"),
    ("attack-p-negative", attack("--p", "-0.1"), r"p must be in \[0, 1\]"),
    ("attack-n-zero", attack("--n", "0"), "n must be >= 1"),
    ("attack-n-text", attack("--n", "twenty"), "expected an integer"),
    ("attack-n-too-large", attack("--n", "100000", "--p", "0.5"), "holds"),
    ("attack-not-adapter", attack("--adapter", "."), "not a LoRA adapter directory"),
    ("attack-truncated-adapter", attack("--adapter", "cut_adapter"), "truncated or corrupted"),
    ("attack-broken-task", attack("--task", "file:broken.jsonl"), "line 2"),
    ("attack-lr-negative", attack("--learning-rate", "-1"), "learning_rate must be > 0"),
    ("attack-progress-without-every", attack("--progress-n-harmful", "3"), "needs --progress-every"),
    ("attack-wrong-architecture", attack("--adapter", "other_adapter", "--n", "10", "--max-steps", "1"),
     "does not match the base model"),
    # evaluate
    ("evaluate-judge", ["evaluate", "--out", "out", "--judge", "nosuchjudge"], "judge"),
    ("evaluate-no-split", ["evaluate", "--out", "out", "--task", "builtin:borderline@nosplit"], "no split"),
    ("evaluate-n-harmful-zero", ["evaluate", "--out", "out", "--n-harmful", "0"], "n_harmful must be >= 1"),
    ("evaluate-n-task-zero", ["evaluate", "--out", "out", "--task", "builtin:sentiment", "--n-task", "0"],
     "n_task must be >= 1"),
    ("evaluate-tokens-cap", ["evaluate", "--out", "out", "--max-new-tokens-harmful", "100000"], "4096"),
    ("evaluate-rescore-nothing", ["evaluate", "--out", ".", "--rescore"], "no saved generations"),
    ("evaluate-rescore-corrupt", ["evaluate", "--out", "damaged", "--rescore"], "not valid JSON"),
    ("evaluate-rescore-changes", ["evaluate", "--out", ".", "--rescore", "--n-harmful", "3"], "cannot change"),
    # run: the config's values, typed and checked before anything is written
    ("run-config-missing", ["run", "--config", "missing.yaml"], "config file not found"),
    ("run-preset", ["run", "--preset", "nope"], "invalid choice"),
    ("run-methods-empty", ["run", "--config", "case.yaml", "--methods", ""], "--methods is empty"),
    ("run-not-utf8", ["run", "--config", "latin1.yaml"], "not UTF-8"),
    ("run-not-yaml", *run("model: [unclosed\n"), "not valid YAML"),
    ("run-not-mapping", *run("- sft\n"), "must be a mapping"),
    ("run-unknown-field", *run(config(attack={"n": 10, "wrong_field": 1})), "unknown field attack.wrong_field"),
    ("run-unknown-top-field", *run(config(foo=1)), "unknown field"),
    ("run-unknown-method", *run(config(methods=["sft", "magic"])), "unknown method"),
    ("run-max-steps-text", *run(config(align={"train": {"max_steps": "ten"}})), "max_steps: expected an integer"),
    ("run-max-steps-negative", *run(config(align={"train": {"max_steps": -5}})), "max_steps must be >= 1"),
    ("run-seed-text", *run(config(seed="abc")), "seed: expected an integer"),
    ("run-methods-number", *run(config(methods=5)), "methods: expected a list"),
    ("run-methods-string", *run(config(methods="sft")), "methods: expected a list"),
    ("run-methods-empty-list", *run(config(methods=[])), "methods is empty"),
    ("run-align-list", *run(config(align=[1, 2])), "align: expected a mapping"),
    ("run-attack-n-text", *run(config(attack={"n": "twenty"})), "n: expected an integer"),
    ("run-attack-p-empty", *run(config(attack={"n": 10, "p": []})), "empty list"),
    ("run-options-not-mapping", *run(config(align={"method_options": {"sft": 2.0}})), "expected a mapping"),
    ("run-option-text", *run(config(methods=["vaccine"], align={"method_options": {"vaccine": {"rho": "abc"}}})),
     "rho: expected a number"),
    ("run-options-unlisted", *run(config(align={"method_options": {"vaccine": {"rho": 2}}})),
     "not among the methods"),
    ("run-options-typo", *run(config(methods=["t-vaccine"], align={"method_options": {"t-vacine": {"rho": 3}}})),
     "'t-vacine' is not among the methods"),
    ("run-options-none", *run(config(methods=["none"], align={"method_options": {"none": {"rho": 3}}})),
     "no options"),
    ("run-variant-train-arg", *run(config(methods=["tv"], align={"method_options": {
        "tv": {"method": "t-vaccine", "max_steps": 8}}})), "set it in train"),
    ("run-old-attack-lr", *run(config(attack={"n": 10, "learning_rate": 1e-3})),
     "renamed: use attack.train.learning_rate"),
    ("run-old-evaluate-harmful", *run(config(evaluate={"harmful": "builtin:safety@eval"})),
     "renamed: use evaluate.eval_harmful"),
    ("run-old-warmup-ratio", *run(config(attack={"n": 10, "train": {"warmup_ratio": 0.1}})), "warmup_steps"),
    ("run-attack-eval-every", *run(config(attack={"n": 10, "eval_every": 5})), "progress.every"),
    ("run-align-model", *run(config(align={"model": "x"})), "top level"),
    ("run-progress-number", *run(config(progress=5)), "progress: expected a mapping"),
    ("run-evaluate-zero", *run(config(evaluate={"n_harmful": 0})), "n_harmful must be >= 1"),
    ("run-model-missing", *run(config(model="./no/model")), "model path not found"),
    ("run-results-is-a-file", ["run", "--config", "case.yaml", "--results", "a_file"], "not a folder"),
    ("run-S-above-depth", *run(config(methods=["t-vaccine"], isolate_alignment=False, align={
        "n_safety": 4, "n_benign": 4, "train": {"max_steps": 1},
        "method_options": {"t-vaccine": {"layers_per_draw": 8}}})), "only 4"),
]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A working folder with the files the cases refer to, as the current directory."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "fake.gguf").write_bytes(b"nope")
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "broken.jsonl").write_text('{"instruction": "a", "output": "b"}\n{oops\n')
    (tmp_path / "blank.txt").write_text("\n  \n\n")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 ?\n".encode("latin-1"))
    (tmp_path / "latin1.yaml").write_bytes("name: caf\xe9\n".encode("latin-1"))
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    (tmp_path / "latin1.jsonl").write_bytes('{"instruction": "caf\xe9", "output": "b"}\n'.encode("latin-1"))
    (tmp_path / "list_field.jsonl").write_text('{"instruction": ["a"], "output": "b"}\n')
    (tmp_path / "number_field.jsonl").write_text('{"instruction": 5, "output": "b"}\n')
    (tmp_path / "open_quote.csv").write_text('instruction,output\n"a,b\n')
    (tmp_path / "damaged").mkdir()
    (tmp_path / "damaged" / "results.jsonl").write_text('{"method": "sft"}\n{"method": \n')
    (tmp_path / "damaged" / "generations_harmful.jsonl").write_text('{"generation": \n')
    (tmp_path / "damaged" / "eval_spec.json").write_text("{}")
    (tmp_path / "empty_results").mkdir()
    (tmp_path / "empty_results" / "results.jsonl").write_text("")
    (tmp_path / "bad_json_adapter").mkdir()
    (tmp_path / "bad_json_adapter" / "adapter_config.json").write_text("{oops")
    (tmp_path / "bad_json_adapter" / "adapter_model.safetensors").write_bytes(b"x")
    (tmp_path / "cut_model").mkdir()
    (tmp_path / "cut_model" / "config.json").write_text('{"model_type": "llama"}')
    (tmp_path / "cut_model" / "model.safetensors").write_bytes(b"\x10\x00\x00")
    (tmp_path / "case.yaml").write_text(config())
    peft_config = json.dumps({"peft_type": "LORA", "r": 8, "lora_alpha": 4, "target_modules": ["q_proj"]})
    whole = tmp_path / "whole.safetensors"
    save_file({"lora_A.weight": torch.zeros(8, 16)}, str(whole))
    weights = whole.read_bytes()
    whole.unlink()
    adapters = {"other_adapter": b"", "corrupt_adapter": os.urandom(64), "empty_adapter": b"",
                "cut_adapter": weights[:-100]}  # random bytes, no bytes, and a file cut short
    for name, content in adapters.items():
        folder = tmp_path / name
        folder.mkdir()
        (folder / "adapter_config.json").write_text(peft_config)
        (folder / "adapter_model.safetensors").write_bytes(content)
    save_file({}, str(tmp_path / "other_adapter" / "adapter_model.safetensors"))
    (tmp_path / "other_adapter" / "tvaccine_adapter.json").write_text(json.dumps({"num_layers": 99}))
    return tmp_path


def files(folder):
    return sorted(p.relative_to(folder) for p in folder.rglob("*"))


def _arguments(case):
    """(argv, message, config text or None) of a case: ``(id, argv, message)`` or ``(id, argv, text, message)``."""
    return (case[1], case[2], None) if len(case) == 3 else (case[1], case[3], case[2])


@pytest.mark.parametrize("argv, message, text", [_arguments(c) for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(workdir, capsys, argv, message, text):
    if text is not None:
        (workdir / "case.yaml").write_text(text)
    before = files(workdir)
    code = main(list(argv))
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.strip().splitlines() if not PROGRESS_BAR.search(line)]
    assert len(lines) == 1 and lines[0].startswith("tvaccine: error:"), err
    assert re.search(message, lines[0]), err
    assert files(workdir) == before


def test_the_table_is_large():
    assert len(CASES) >= 50


def test_a_cache_path_that_is_a_file(workdir, capsys, monkeypatch):
    monkeypatch.setenv("TVACCINE_CACHE", str(workdir / "a_file"))
    assert main(["generate", "hi", *TINY]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "TVACCINE_CACHE" in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_an_output_in_a_read_only_folder(workdir, capsys):
    locked = workdir / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert main(["align", "--out", "locked/out", *TINY]) == 2
        assert "not writable" in capsys.readouterr().err
        assert files(locked) == []
    finally:
        locked.chmod(0o700)


def test_a_second_writer_to_the_same_output_is_refused(workdir, capsys):
    from tvaccine.outputs import OutputLock

    with OutputLock(workdir / "out"):
        before = files(workdir)
        assert main(align("--max-steps", "1")) == 2
        err = capsys.readouterr().err.strip()
        assert "being written by another tvaccine run (pid" in err and err.count("\n") == 0
        assert files(workdir) == before
    assert not (workdir / "out.lock").exists()


def test_a_lock_left_by_a_dead_process_is_taken_over(workdir):
    from tvaccine.outputs import OutputLock

    (workdir / "out.lock").write_text("999999999\n")  # a killed run's file: nobody holds the lock
    with OutputLock(workdir / "out") as lock:
        assert lock.path.read_text() == f"{os.getpid()}\n"
    assert not (workdir / "out.lock").exists()
