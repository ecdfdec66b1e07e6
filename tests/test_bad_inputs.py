"""Bad input, one table: each case exits with code 2 and one line `tvaccine: error: ...` naming the
problem, prints no traceback, and leaves the working folder (each case runs in its own) exactly as it
was: no new file, and no file of the user's deleted or changed, byte for byte.

The cases that get past validation (the model loads, then the configuration turns out not to fit
it) check that the work folder, the lock and any folder made for them are removed again."""

import functools
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file

from tvaccine.cli import main

TINY = ["--model", "tiny-random-llama"]
# The cases that load the model also show its "Loading weights" bar, and `generate` its load time, on stderr.
PROGRESS_BAR = re.compile(r"\|\s*\d+/\d+ \[|^\[model loaded in [\d.]+ s\]$")
# Harmful data that ships with the package: the cases test the input, not a download.
TEMPLATE = "builtin:safety@compliance_template"
PROBE = [*TINY, "--probe-data", TEMPLATE]
RUN = {"model": "tiny-random-llama", "methods": ["sft"], "attack": {"n": 10, "harmful_data": TEMPLATE},
       "align": {"probe_data": TEMPLATE}}


def config(**changes) -> str:
    """A run config: the small valid one above with ``changes`` merged in (None removes a key)."""
    values = {**RUN, **changes}
    if isinstance(changes.get("align"), dict):  # a case's own align block still probes with the template
        values["align"] = {**RUN["align"], **changes["align"]}
    return yaml.safe_dump({k: v for k, v in values.items() if v is not None})


def align(*args):
    return ["align", "--out", "out", *PROBE, *args]


def attack(*args):
    return ["attack", "--out", "out", *TINY, "--harmful-data", TEMPLATE, *args]


RUN_ARGV = ["run", "--config", "case.yaml", "--results", "res"]
# The tiny model's own answers never end, so the cases that align on it take the data's benign answers.
GIVEN = ["--max-steps", "1", "--n-safety", "4", "--n-benign", "4", "--benign-answers", "given"]


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
    ("align-S-above-depth", align("--method", "t-vaccine", "--layers-per-draw", "8", *GIVEN), "only 4"),
    ("align-excluded-layer-missing", align("--method", "t-vaccine", "--set", "exclude_layers=9", *GIVEN),
     "does not exist"),
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
    ("layers-out-not-empty", ["layers", "--out", "full", *PROBE], "exists and is not empty"),
    ("layers-answers-cut-away", ["layers", "--out", "out", "--max-length", "2", "--samples", "2", *PROBE],
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
        "n_safety": 4, "n_benign": 4, "benign_answers": "given", "train": {"max_steps": 1},
        "method_options": {"t-vaccine": {"layers_per_draw": 8}}})), "only 4"),
    # issue 25, data loss: --overwrite replaces only a folder tvaccine wrote; nothing else is ever deleted
    ("align-overwrite-user-folder", ["align", "--out", "mythesis", "--overwrite", *TINY], "is not a tvaccine output"),
    ("evaluate-overwrite-user-folder", ["evaluate", "--out", "mythesis", "--overwrite", *TINY],
     "is not a tvaccine output"),
    ("layers-overwrite-user-folder", ["layers", "--out", "mythesis", "--overwrite", *PROBE],
     "is not a tvaccine output"),
    ("align-overwrite-home", ["align", "--out", "home", "--overwrite", *TINY], "is the home folder"),
    ("align-overwrite-git-clone", ["align", "--out", "clone", "--overwrite", *TINY], "is a git working tree"),
    ("align-overwrite-parent", ["align", "--out", "..", "--overwrite", *TINY], "a parent of the current folder"),
    ("align-overwrite-root", ["align", "--out", "/", "--overwrite", *TINY], "'/' is a parent"),
    ("align-overwrite-tvaccine-git", ["align", "--out", "marked_clone", "--overwrite", *TINY], "git working tree"),
    ("align-user-partial", ["align", "--out", "taken", *TINY], r"taken\.partial exists and tvaccine did not write it"),
    ("align-user-partial-file", ["align", "--out", "filed", *TINY], r"filed\.partial exists and tvaccine did not"),
    ("align-user-lock", ["align", "--out", "locked_name", *TINY], r"locked_name\.lock exists and is not a tvaccine"),
    ("align-partial-symlink", ["align", "--out", "linked", *TINY], r"linked\.partial is a symbolic link"),
    ("run-results-user-folder", ["run", "--config", "case.yaml", "--results", "mine"],
     "is not a tvaccine results folder"),
    ("run-results-user-folder-overwrite", ["run", "--config", "case.yaml", "--results", "mine", "--overwrite"],
     "is not a tvaccine results folder"),
    ("run-results-an-align-output", ["run", "--config", "case.yaml", "--results", "marked_output"],
     "is not a tvaccine results folder"),
    ("report-user-folder", ["report", "mine"], "not a tvaccine results folder .* pass --out"),
    ("report-out-user-folder", ["report", "legacy_results", "--out", "mythesis"], "holds no earlier tvaccine report"),
    ("report-out-home", ["report", "legacy_results", "--out", "home"], "is the home folder"),
    # issue 25: tracebacks that are now one line, before any model loads where none is needed
    ("out-dot", ["align", "--out", ".", *TINY], "'.' is the current folder"),
    ("out-empty", ["align", "--out", "", *TINY], "'.' is the current folder"),
    ("out-dot-slash", ["layers", "--out", "./", *PROBE], "'.' is the current folder"),
    ("run-results-dot", ["run", "--config", "case.yaml", "--results", "."], "results folder '.' is the current"),
    ("out-symlink-to-folder", ["align", "--out", "link_dir", *TINY], "is a symbolic link"),
    ("out-symlink-dangling", ["evaluate", "--out", "link_dangling", *TINY], "is a symbolic link"),
    ("run-name-escapes", ["run", "--config", "case.yaml"], config(name="../../escaped"), "not a folder name"),
    ("run-name-dot", ["run", "--config", "case.yaml"], config(name="."), "not a folder name"),
    ("out-dotdot-through-missing", ["align", "--out", "nowhere/../../x", *TINY], "'..' after it leads nowhere"),
    ("align-seed-negative", align("--seed", "-1"), r"seed must be in \[0, 2\*\*32 - 1\], got -1"),
    ("align-seed-huge", align("--seed", "99999999999"), r"seed must be in \[0, 2\*\*32 - 1\]"),
    ("attack-seed-negative", attack("--seed", "-1"), r"seed must be in \[0, 2\*\*32 - 1\]"),
    ("run-seed-flag-negative", ["run", "--config", "case.yaml", "--seed", "-1"], r"seed must be in .* got -1"),
    ("run-seed-flag-huge", ["run", "--config", "case.yaml", "--seed", "42,99999999999"], "got 99999999999"),
    ("run-seed-yaml-negative", *run(config(seed=-1)), r"seed must be in .* got -1"),
    ("run-seed-yaml-huge", *run(config(seed=[42, 99999999999])), "got 99999999999"),
    ("align-lora-targets", align("--lora-targets", "no_such_proj", *GIVEN), "LoRA target 'no_such_proj' is no module"),
    ("align-report-to-missing", align("--set", "report_to=wandb"), "wandb needs the package wandb.*pip install wandb"),
    ("attack-report-to-missing", attack("--set", "report_to=wandb"), "pip install wandb"),
    ("run-report-to-missing", *run(config(align={"train": {"report_to": "wandb"}})), "pip install wandb"),
    ("evaluate-rescore-extra-key", ["evaluate", "--out", "extra_key", "--rescore"], "unknown field 'nosuch'"),
    ("evaluate-rescore-spec-list", ["evaluate", "--out", "spec_list", "--rescore"], "expected a JSON object"),
    ("evaluate-rescore-no-generation", ["evaluate", "--out", "no_generation", "--rescore"],
     "line 2 has no 'generation' text"),
    ("evaluate-rescore-no-label", ["evaluate", "--out", "no_label", "--rescore"], "line 1 has no 'label'"),
    ("generate-gguf-cut-short", ["generate", "hi", "--model", "cut.gguf"], "not a readable GGUF file"),
    ("data-lone-surrogate", ["data", "show", "file:surrogate.jsonl"], r"lone UTF-16 surrogate \(\\ud800\)"),
    ("data-fifo", ["data", "show", "file:fifo.jsonl"], "not a regular file"),
    ("prompts-file-fifo", ["generate", "--prompts-file", "fifo.txt"], "not a regular file"),
    ("run-config-fifo", ["run", "--config", "fifo.yaml"], "not a regular file"),
    # issue 25: offline hub ids fail at once (the tests run with HF_HUB_OFFLINE=1; see also the subprocess test)
    ("generate-offline-hub-id", ["generate", "hi", "--model", "gpt2"], "not in the local Hugging Face cache"),
    ("evaluate-offline-judge", ["evaluate", "--out", "out", "--judge", "llama-guard"],
     "could not load judge llama-guard.*couldn't find them in the cached files"),
    ("align-offline-hub-id", ["align", "--out", "out", "--model", "gpt2"], "not in the local Hugging Face cache"),
    ("run-offline-hub-id", *run(config(model="gpt2", isolate_alignment=False)), "not in the local Hugging Face cache"),
    ("data-offline-hub-source", ["data", "show", "beavertails"],
     "beavertails: PKU-Alignment/BeaverTails is not in the data mirror and the Hugging Face hub did not give it"),
    ("data-fetch-no-mirror", ["data", "fetch", "beavertails"], "data fetch needs a mirror folder"),
    ("generate-unknown-model-type", ["generate", "hi", "--model", "unknown_type"], "'nosuchtype' is not a model type"),
    # issue 25, questionable: a sweep value listed twice is refused, like a method or a seed listed twice
    ("run-sweep-value-twice", *run(config(attack={"n": 10, "p": [0.2, 0.2]})), r"attack.p lists a value twice"),
    ("run-train-sweep-value-twice", *run(config(attack={"n": 10, "train": {"learning_rate": [1e-3, 1e-3]}})),
     "lists a value twice"),
]


def _user_files(tmp_path):
    """Folders of the user's own that tvaccine must never delete: a thesis, a home folder, a git clone,
    a results-like folder, and pre-existing files in the names of tvaccine's work folder and lock."""
    thesis = {"paper.tex": "\\section{Intro}\n", "notes.txt": "remember\n", "chapters/ch1.tex": "one\n"}
    for root in ("mythesis", "clone", "marked_clone"):
        for name, text in thesis.items():
            (tmp_path / root / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / root / name).write_text(text)
    (tmp_path / "clone" / ".git" / "objects").mkdir(parents=True)
    (tmp_path / "clone" / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (tmp_path / "marked_clone" / ".git").write_text("gitdir: ../elsewhere\n")
    (tmp_path / "marked_clone" / ".tvaccine").write_text('{"tvaccine": "0.1.0", "kind": "output"}')
    (tmp_path / "home" / ".ssh").mkdir(parents=True)
    (tmp_path / "home" / ".ssh" / "id_rsa").write_text("-----BEGIN KEY-----\n")
    (tmp_path / "home" / "Documents").mkdir()
    (tmp_path / "home" / "Documents" / "cv.txt").write_text("me\n")
    (tmp_path / "taken.partial").mkdir()
    (tmp_path / "taken.partial" / "data.txt").write_text("mine\n")
    (tmp_path / "filed.partial").write_text("a file\n")
    (tmp_path / "locked_name.lock").write_text("my notes, not a pid\n")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "linked.partial").symlink_to("elsewhere")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "report.md").write_text("# my own report\n")
    (tmp_path / "mine" / "results.jsonl").write_text('{"method": "sft", "setting": "mine"}\n')
    (tmp_path / "marked_output").mkdir()
    (tmp_path / "marked_output" / ".tvaccine").write_text('{"tvaccine": "0.1.0", "kind": "output"}')
    (tmp_path / "marked_output" / "summary.json").write_text("{}")
    legacy = tmp_path / "legacy_results"  # written before the marker: recognised by its files
    legacy.mkdir()
    (legacy / "results.jsonl").write_text('{"method": "sft", "setting": "p0.1", "seed": 42}\n')
    (legacy / "run_config.yaml").write_text("methods: [sft]\n")
    (legacy / "environment.json").write_text('{"tvaccine": "0.1.0"}')
    (tmp_path / "target_dir").mkdir()
    (tmp_path / "target_dir" / "keep.txt").write_text("x")
    (tmp_path / "link_dir").symlink_to("target_dir")
    (tmp_path / "link_dangling").symlink_to("no_such_target")


def _saved_generations(tmp_path):
    """Evaluation folders to re-score whose saved files are not what tvaccine evaluate writes."""
    harmful = '{"instruction": "a", "generation": "b"}\n'
    cases = {"extra_key": ('{"nosuch": 1}', harmful), "spec_list": ("[1, 2]", harmful),
             "no_generation": ("{}", harmful + '{"instruction": "c"}\n'), "no_label": ("{}", harmful)}
    for name, (spec, generations) in cases.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "eval_spec.json").write_text(spec)
        (tmp_path / name / "generations_harmful.jsonl").write_text(generations)
    (tmp_path / "no_label" / "generations_task.jsonl").write_text('{"generation": "positive"}\n')
    (tmp_path / "no_label" / "generations_task.meta.json").write_text('{"metric": "label_word"}')


@functools.cache
def _cut_gguf(folder) -> bytes:
    """A GGUF file whose header is valid and whose tensor data is cut short."""
    import gguf
    import numpy as np

    path = folder / "whole.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.zeros((16, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    whole = path.read_bytes()
    path.unlink()
    return whole[:-200]


@pytest.fixture
def workdir(tmp_path, tmp_path_factory, monkeypatch):
    """A working folder with the files the cases refer to, as the current directory."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TVACCINE_DATA", raising=False)  # no data mirror: a hub source is a hub source
    _user_files(tmp_path)
    _saved_generations(tmp_path)
    (tmp_path / "cut.gguf").write_bytes(_cut_gguf(tmp_path_factory.getbasetemp()))
    (tmp_path / "surrogate.jsonl").write_text('{"instruction": "a\\ud800b", "output": "x"}\n')
    for fifo in ("fifo.jsonl", "fifo.txt", "fifo.yaml"):
        os.mkfifo(tmp_path / fifo)
    (tmp_path / "unknown_type").mkdir()
    (tmp_path / "unknown_type" / "config.json").write_text('{"model_type": "nosuchtype"}')
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


def snapshot(folder) -> dict:
    """Every entry under ``folder`` (symbolic links not followed) with what it holds: a file's SHA-256,
    a link's target, a pipe; so a changed, deleted or added file shows."""
    entries = {}
    for parent, dirs, names in os.walk(folder):
        for name in dirs + names:
            path = Path(parent) / name
            if path.is_symlink():
                entries[str(path.relative_to(folder))] = "-> " + os.readlink(path)
            elif path.is_dir():
                entries[str(path.relative_to(folder))] = "folder"
            elif path.is_file():
                entries[str(path.relative_to(folder))] = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                entries[str(path.relative_to(folder))] = "special"
    return entries


def _arguments(case):
    """(argv, message, config text or None) of a case: ``(id, argv, message)`` or ``(id, argv, text, message)``."""
    return (case[1], case[2], None) if len(case) == 3 else (case[1], case[3], case[2])


@pytest.mark.parametrize("argv, message, text", [_arguments(c) for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(workdir, capsys, monkeypatch, argv, message, text):
    if text is not None:
        (workdir / "case.yaml").write_text(text)
    if "home" in argv:  # the home folder is the one made for the case
        from tvaccine.models import cache_dir

        monkeypatch.setenv("TVACCINE_CACHE", str(cache_dir()))
        monkeypatch.setenv("HOME", str(workdir / "home"))
    before = snapshot(workdir)
    code = main(list(argv))
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.strip().splitlines() if not PROGRESS_BAR.search(line)]
    assert len(lines) == 1 and lines[0].startswith("tvaccine: error:"), err
    assert re.search(message, lines[0]), err
    assert snapshot(workdir) == before


def test_the_table_is_large():
    assert len(CASES) >= 176
    assert len({case[0] for case in CASES}) == len(CASES)


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


# ---------------------------------------------------------------- issue 25: nothing of the user's is lost

REPO = Path(__file__).resolve().parents[1]


def test_overwrite_replaces_a_marked_output_and_only_with_the_flag(workdir, capsys):
    probe = ["layers", "--out", "probe", "--samples", "2", "--batch-size", "2", "--max-length", "512", *PROBE]
    assert main(probe) == 0
    marker = json.loads((workdir / "probe" / ".tvaccine").read_text())
    assert set(marker) == {"tvaccine", "kind"} and marker["kind"] == "output"
    capsys.readouterr()
    assert main(probe) == 2
    assert "exists and is not empty; pass --overwrite to replace it" in capsys.readouterr().err
    (workdir / "probe" / "stale.txt").write_text("from the first run")
    assert main([*probe, "--overwrite"]) == 0
    assert not (workdir / "probe" / "stale.txt").exists() and (workdir / "probe" / "layer_norms.json").is_file()
    assert not (workdir / "probe.partial").exists() and not (workdir / "probe.lock").exists()


def test_folders_written_before_the_marker_are_recognised_by_their_files():
    from tvaccine.outputs import output_kind

    results = REPO / "docs" / "results" / "archive"
    assert output_kind(results / "cpu_chat_verdict") == "results"
    assert output_kind(results / "tvaccine_faithful_cpu") == "results"
    assert output_kind(results / "cpu_chat_verdict" / "align" / "sft") == "output"
    assert output_kind(results / "cpu_chat_verdict_sft_seeds" / "seed-43") == "output"
    assert output_kind(results) is None and output_kind(REPO / "docs") is None


def test_the_parent_of_the_current_folder_is_never_replaced(workdir, capsys, monkeypatch):
    child = workdir / "parent" / "child"
    child.mkdir(parents=True)
    (workdir / "parent" / "own.txt").write_text("the parent's file")
    (workdir / "parent" / ".tvaccine").write_text('{"tvaccine": "0.1.0"}')  # even one that looks like an output
    before = snapshot(workdir)
    monkeypatch.chdir(child)
    assert main(["align", "--out", "..", "--overwrite", *TINY]) == 2
    assert "'..' is a parent of the current folder" in capsys.readouterr().err
    assert snapshot(workdir) == before


def test_an_output_that_cannot_be_removed_is_refused_before_any_work(workdir, capsys, monkeypatch):
    """What a read-only folder inside the old output does (simulated: the tests may run as root)."""
    import tvaccine.outputs as outputs

    (workdir / "old" / "sub").mkdir(parents=True)
    (workdir / "old" / ".tvaccine").write_text('{"tvaccine": "0.1.0"}')
    (workdir / "old" / "sub" / "f").write_text("x")
    real_access = os.access
    monkeypatch.setattr(outputs.os, "access", lambda path, mode: Path(path).name != "sub" and real_access(path, mode))
    before = snapshot(workdir)
    assert main(["align", "--out", "old", "--overwrite", *TINY]) == 2
    assert re.search(r"cannot replace old: old/sub is not writable", capsys.readouterr().err)
    assert snapshot(workdir) == before


def test_report_out_renders_committed_results_without_changing_them(tmp_path, capsys):
    committed = REPO / "docs" / "results" / "archive" / "cpu_chat_verdict"
    before = snapshot(committed)
    out = tmp_path / "rendered"
    assert main(["report", str(committed), "--out", str(out)]) == 0
    assert snapshot(committed) == before
    text = (out / "report.md").read_text()
    assert text.startswith("# tvaccine results: cpu_chat_verdict") and "| SFT |" in text
    assert (out / "hs_vs_steps.png").is_file() and (out / "t-vaccine_layers.png").is_file()
    assert main(["report", str(committed), "--out", str(out)]) == 0  # its own earlier report is replaced
    assert snapshot(committed) == before


MERGE_RUN = {"name": "merge", "model": "tiny-random-llama", "seed": 0, "methods": ["none", "sft"],
             "isolate_alignment": False,
             "align": {"n_safety": 4, "n_benign": 4, "benign_answers": "given", "max_length": 512,
                       "train": {"max_steps": 1, "per_device_train_batch_size": 4, "disable_tqdm": True}},
             "attack": {"task": "builtin:sentiment", "harmful_data": TEMPLATE, "n": 10, "p": 0.2, "max_length": 512,
                        "train": {"max_steps": 1, "per_device_train_batch_size": 5, "disable_tqdm": True}},
             "evaluate": {"n_harmful": 2, "n_task": 2, "n_borderline": 2, "n_forward": 2,
                          "max_new_tokens_harmful": 2, "max_new_tokens_task": 2}}


def test_a_rerun_keeps_the_rows_it_does_not_redo_and_overwrite_starts_over(workdir, capsys):
    from tvaccine.results_io import read_jsonl

    (workdir / "merge.yaml").write_text(yaml.safe_dump(MERGE_RUN))
    argv = ["run", "--config", "merge.yaml", "--results", "res"]
    assert main(argv) == 0
    res = workdir / "res"
    assert json.loads((res / ".tvaccine").read_text())["kind"] == "results"
    config_bytes = (res / "run_config.yaml").read_bytes()
    rows = read_jsonl(res / "results.jsonl")
    assert [r["method"] for r in rows] == ["none", "sft"]
    assert main([*argv, "--methods", "none"]) == 0  # reuses "none", keeps the SFT row and the config
    assert read_jsonl(res / "results.jsonl") == rows
    assert (res / "run_config.yaml").read_bytes() == config_bytes
    assert "| SFT |" in (res / "report.md").read_text()
    (res / "extra.txt").write_text("left by hand")
    capsys.readouterr()
    assert main([*argv, "--methods", "none", "--overwrite"]) == 0  # a fresh folder: only what this run made
    assert [r["method"] for r in read_jsonl(res / "results.jsonl")] == ["none"]
    assert not (res / "extra.txt").exists() and not (res / "align").exists()
    assert yaml.safe_load((res / "run_config.yaml").read_text())["methods"] == ["none"]


def test_an_offline_hub_id_fails_at_once_in_one_line(tmp_path):
    """No HF_HUB_OFFLINE and a hub that cannot be reached: one line, without the hub client's retries."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE",
                                                            "HF_DATASETS_OFFLINE")}
    env.update(HF_ENDPOINT="http://127.0.0.1:9", HF_HOME=str(tmp_path / "hf"), PYTHONPATH=str(REPO / "src"))
    for proxy in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        env.pop(proxy, None)
    done = subprocess.run([sys.executable, "-m", "tvaccine", "generate", "hi", "--model", "gpt2"], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        "tvaccine: error: model 'gpt2' is not in the local Hugging Face cache and the hub is offline "
        "(HF_HUB_OFFLINE, or no network): download it once online, or pass a local directory or .gguf file"]


def test_a_missing_integration_names_its_package_and_extra(monkeypatch):
    from tvaccine import config
    from tvaccine.errors import UserError

    monkeypatch.setitem(config.INTEGRATIONS, "tensorboard", (("no_such_tensorboard",), "'tvaccine[tensorboard]'"))
    with pytest.raises(UserError, match=re.escape("train.report_to: tensorboard needs the package "
                                                  "no_such_tensorboard, which is not installed: pip install "
                                                  "'tvaccine[tensorboard]'")):
        config.check_integrations(["tensorboard"], "train.report_to")
    config.check_integrations(["none-of-these", "all"], "train.report_to")  # left to transformers


def test_a_byte_order_mark_is_not_part_of_the_first_prompt(workdir, capsys):
    (workdir / "bom.txt").write_bytes("\ufeffFirst prompt\nSecond prompt\n".encode("utf-8"))
    assert main(["generate", "--prompts-file", "bom.txt", "--max-new-tokens", "1", *TINY]) == 0
    assert "### First prompt\n" in capsys.readouterr().out


def test_counts_above_the_data_warn_in_one_line_and_use_all(workdir, capsys):
    assert main(["evaluate", "--out", "ev", "--n-harmful", "100000", "--n-borderline", "1", "--task", "none",
                 "--max-new-tokens-harmful", "1", "--n-forward", "1", "--batch-size", "64", *TINY]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("tvaccine: warning:")]
    assert warnings == ["tvaccine: warning: n_harmful is 100000, but builtin:safety@eval holds 210 harmful prompts: "
                        "scoring all 210"]
    assert json.loads((workdir / "ev" / "scores.json").read_text())["n_harmful"] == 210
