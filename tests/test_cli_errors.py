"""Bad input: a one-line error naming the problem, exit code 2, and nothing written."""

import pytest

from tvaccine.cli import main

CASES = [
    (["generate"], "no prompt given"),
    (["generate", "hi", "--model", "/no/such/model"], "model path not found"),
    (["generate", "hi", "--model", "{tmp}/fake.gguf"], "not a GGUF file"),
    (["generate", "hi", "--model", "{tmp}"], "no config.json"),
    (["generate", "hi", "--adapter", "{tmp}"], "not a LoRA adapter directory"),
    (["generate", "--prompts-file", "{tmp}/missing.txt"], "prompts file not found"),
    (["data", "show", "nosuchsource"], "unknown data source"),
    (["data", "show", "builtin:nope"], "builtin"),
    (["data", "show", "file:{tmp}/missing.jsonl"], "missing.jsonl"),
    (["align", "--out", "{tmp}/out", "--method", "vaccine", "--rho", "-1"], "rho must be >= 0"),
    (["align", "--out", "{tmp}/out", "--method", "t-vaccine", "--layers-per-draw", "0"], "must be >= 1"),
    (["align", "--out", "{tmp}/out", "--method", "t-vaccine", "--resample-every", "0"], "J"),
    (["align", "--out", "{tmp}/out", "--method", "t-vaccine", "--probe-every", "0"], "K"),
    (["align", "--out", "{tmp}/out", "--method", "t-vaccine", "--harmful", "file:{tmp}/empty.jsonl"], "empty"),
    (["align", "--out", "{tmp}/out", "--method", "sft", "--rho", "1"], "do not apply"),
    (["align", "--out", "{tmp}/out", "--data", "nosuch"], "unknown data source"),
    (["align", "--out", "{tmp}/out", "--max-length", "2"], "max length"),
    (["align", "--out", "{tmp}/full"], "exists and is not empty"),
    (["attack", "--out", "{tmp}/out", "--p", "1.5"], r"p must be in \[0, 1\]"),
    (["attack", "--out", "{tmp}/out", "--p", "-0.1"], r"p must be in \[0, 1\]"),
    (["attack", "--out", "{tmp}/out", "--n", "100000", "--p", "0.5"], "holds"),
    (["attack", "--out", "{tmp}/out", "--adapter", "{tmp}"], "not a LoRA adapter directory"),
    (["attack", "--out", "{tmp}/out", "--task", "file:{tmp}/broken.jsonl"], "line 2"),
    (["evaluate", "--out", "{tmp}/out", "--judge", "nosuchjudge"], "judge"),
    (["evaluate", "--out", "{tmp}/out", "--task", "builtin:borderline@nosplit"], "no split"),
    (["run", "--config", "{tmp}/missing.yaml"], "config file not found"),
    (["run", "--config", "{tmp}/bad.yaml"], "unknown field"),
    (["run", "--config", "{tmp}/badmethod.yaml"], "unknown method"),
    (["report", "{tmp}"], "no results.jsonl"),
]


@pytest.mark.parametrize("argv,message", CASES, ids=[" ".join(c[0][:3]) + f"#{i}" for i, c in enumerate(CASES)])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys, argv, message):
    (tmp_path / "fake.gguf").write_bytes(b"nope")
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "broken.jsonl").write_text('{"instruction": "a", "output": "b"}\n{oops\n')
    (tmp_path / "bad.yaml").write_text("model: tiny-random-llama\nattack: {n: 10, wrong_field: 1}\n")
    (tmp_path / "badmethod.yaml").write_text("model: tiny-random-llama\nmethods: [sft, magic]\n")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    code = main([a.replace("{tmp}", str(tmp_path)) for a in argv])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.count("\n") == 0 and err.startswith("tvaccine: error:"), err
    import re
    assert re.search(message, err), err
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_argparse_errors_also_exit_2(capsys):
    assert main(["align", "--method", "magic", "--out", "x"]) == 2
    assert "invalid choice" in capsys.readouterr().err
