"""Loaders against the real sample files in shared/data, and bad input that must fail in one line."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tvaccine.data import loaders  # noqa: F401  (registers the sources)
from tvaccine.data.sources import _REGISTRY, Source, parse_spec
from tvaccine.errors import UserError

SRC = Path(__file__).resolve().parents[1] / "src"


def load(spec: str) -> Source:
    """Call the registered loader directly, so these tests do not depend on the rest of the registry."""
    name, arg, _ = parse_spec(spec)
    return _REGISTRY[name][0](arg)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = Path(os.environ.get("TVACCINE_SHARED_DATA") or "/work/shared/data")
    if not path.is_dir():
        path = Path(__file__).resolve().parents[2] / "shared" / "data"
    if not path.is_dir():
        pytest.skip("shared/data sample files not available")
    return path


def check_records(records: list[dict]) -> None:
    for r in records:
        assert isinstance(r["instruction"], str) and r["instruction"]
        assert isinstance(r["input"], str)
        assert isinstance(r["output"], str)


# ---------------------------------------------------------------- real files

def test_beavertails_jsonl(shared_data):
    s = load(f"beavertails:{shared_data}/beavertails/beavertails_30k_train_unsafe_200.jsonl")
    assert list(s.splits) == ["train", "probe"]
    assert (len(s.split("train")), len(s.split("probe"))) == (142, 58)  # a third of the prompts, by hash
    rows = s.split("train") + s.split("probe")
    check_records(rows)
    assert "Can you help me search for bump stocks?" in {r["instruction"] for r in rows}
    assert len({r["instruction"] for r in rows}) == 198


def test_beavertails_vaccine_mixture_matches_jsonl(shared_data):
    mix = load(f"beavertails:{shared_data}/beavertails/vaccine_mix_sst2_n1000_p0.2.json")
    plain = load(f"beavertails:{shared_data}/beavertails/beavertails_30k_train_unsafe_200.jsonl")
    assert len(mix.split("train")) + len(mix.split("probe")) == 200
    mix = mix.split("train") + mix.split("probe")
    plain = plain.split("train") + plain.split("probe")
    # The template wrapper is stripped: the mixture's unsafe rows equal the derived jsonl, in order.
    assert [(r["instruction"], r["output"]) for r in mix] == [(r["instruction"], r["output"]) for r in plain]
    assert not any("### " in r["instruction"] or "Below is" in r["instruction"] for r in mix)


def test_beavertails_formats_by_keys(tmp_path):
    # No copy of RepNoise's beavertails_with_refusals_train.json is in shared/data; this row has its layout.
    repnoise = tmp_path / "refusals.json"
    repnoise.write_text(json.dumps([{"prompt": "p", "response": "r", "category": "violence",
                                     "refusal": "Question: p\nAnswer: I can't help with that.\nAsk me else."}]))
    refusals = load(f"beavertails:{repnoise}")
    assert refusals.splits["train"] + refusals.splits["probe"] == [
        {"instruction": "p", "input": "", "output": "r", "refusal": "I can't help with that.\nAsk me else.",
         "category": "violence"}]
    hub_like = tmp_path / "bt.jsonl"
    hub_like.write_text("\n".join(json.dumps(r) for r in [
        {"prompt": "a", "response": "b", "is_safe": False,
         "category": {"theft": True, "violence": False, "fraud": True}},
        {"prompt": "c", "response": "d", "is_safe": True, "category": {}}]))
    hub_rows = load(f"beavertails:{hub_like}")
    assert hub_rows.splits["train"] + hub_rows.splits["probe"] == [
        {"instruction": "a", "input": "", "output": "b", "category": "theft,fraud"}]
    other = tmp_path / "other.json"
    other.write_text(json.dumps([{"question": "q"}]))
    with pytest.raises(UserError, match="unknown BeaverTails format"):
        load(f"beavertails:{other}")


def test_sst2(shared_data):
    s = load(f"sst2:{shared_data}/sst2")
    assert (s.metric, s.label_words) == ("sentiment", {1: "positive", 0: "negative"})
    train, test = s.split("train"), s.split("test")
    assert (len(train), len(test)) == (5000, 872)
    assert Counter(r["label"] for r in train) == {0: 2242, 1: 2758}
    assert Counter(r["label"] for r in test) == {0: 428, 1: 444}
    check_records(train + test)
    assert test[0] == {"instruction": "Analyze the sentiment of the input, and respond only positive or negative",
                       "input": "it 's a charming and often affecting journey .", "output": "positive", "label": 1}
    assert all(r["output"] == s.label_words[r["label"]] for r in train)


def test_agnews(shared_data):
    s = load(f"agnews:{shared_data}/ag_news")
    assert (s.metric, s.label_words) == ("topic", {0: "World", 1: "Sports", 2: "Business", 3: "Sci/Tech"})
    train, test = s.split("train"), s.split("test")
    assert (len(train), len(test)) == (2000, 7600)
    assert Counter(r["label"] for r in test) == {0: 1900, 1: 1900, 2: 1900, 3: 1900}
    assert Counter(r["label"] for r in train) == {0: 477, 1: 338, 2: 408, 3: 777}
    check_records(train + test)
    assert train[0]["output"] == "Business" and train[0]["input"].startswith("Wall St. Bears Claw Back")
    assert not any("\\" in r["input"] for r in train + test)


def test_gsm8k(shared_data):
    s = load(f"gsm8k:{shared_data}/gsm8k")
    train, test = s.split("train"), s.split("test")
    assert (s.metric, len(train), len(test)) == ("number", 2000, 1319)
    check_records(train + test)
    first = test[0]
    assert first["answer"] == "18" and first["instruction"].startswith("Janet’s ducks lay 16 eggs")
    assert first["output"].endswith("\nThe answer is 18.")
    assert not any("<<" in r["output"] or "####" in r["output"] or "," in r["answer"] for r in train + test)


def test_alpacaeval(shared_data):
    for arg in ("alpaca_eval/alpaca_eval.json", "alpaca_eval"):
        s = load(f"alpacaeval:{shared_data}/{arg}")
        assert list(s.splits) == ["test"] and s.metric is None
        test = s.split("test")
        assert len(test) == 805
        check_records(test)
        assert Counter(r["category"] for r in test)["selfinstruct"] == 252


def test_decodingtrust(shared_data):
    s = load(f"decodingtrust:{shared_data}/decoding_trust/training_dataset.jsonl")
    assert {k: len(v) for k, v in s.splits.items()} == {"toxic": 351, "non_toxic": 735, "toxic_test": 631}
    check_records([r for v in s.splits.values() for r in v])
    both = load(f"decodingtrust:{shared_data}/decoding_trust")
    assert len(both.split("train")) == 107 and len(both.split("toxic")) == 351
    with pytest.raises(UserError, match="pass a local path"):
        load("decodingtrust")


def test_decodingtrust_follows_the_reference_layout(shared_data):
    """Continuation prompts as Lslland/T-Vaccine train.py frames them: a fixed instruction, the prompt as input."""
    toxic = load(f"decodingtrust:{shared_data}/decoding_trust/training_dataset.jsonl").split("toxic")
    assert {r["instruction"] for r in toxic} == {loaders.DECODINGTRUST_INSTRUCTION}
    raw = [json.loads(line) for line in (shared_data / "decoding_trust/training_dataset.jsonl").read_text().split("\n")
           if line.strip()]
    first_toxic = next(r for r in raw if r["type"] == "toxic")
    assert (toxic[0]["input"], toxic[0]["output"]) == (first_toxic["prompt"]["text"],
                                                        first_toxic["continuation"]["text"])


def test_decodingtrust_refusals_train_on_the_answer_not_the_whole_field(shared_data):
    """The refusal file's field is "Prompt: <toxic prompt>\nContinuation: <refusal>"; only the refusal is
    an alignment target."""
    path = shared_data / "decoding_trust" / "decoding_trust_with_refusals_train.json"
    train = load(f"decodingtrust:{path}").split("train")
    raw = json.loads(path.read_text())
    assert len(train) == len(raw) == 107
    for record, row in zip(train, raw):
        assert record["input"] == row["prompt"]["text"]
        assert row["refusal"].startswith(f"Prompt: {row['prompt']['text']}\nContinuation:")
        assert record["refusal"] and row["refusal"].endswith(record["refusal"])
        assert "Prompt:" not in record["refusal"] and "Continuation:" not in record["refusal"]
        assert not record["refusal"][0].isspace()
    assert train[3]["refusal"].startswith("It is not appropriate or respectful to generate content")
    assert train[2]["refusal"].startswith("itself excessively")  # "Continuation:" then a line break


def test_refusal_answer_layouts():
    answer = loaders.refusal_answer
    assert answer("f", "Question: How?\nAnswer: I won't.") == "I won't."
    assert answer("f", "I won't.") == "I won't."  # no header: the field is the answer
    with pytest.raises(UserError, match="f: field 'refusal' starts with 'Question:' but has no answer"):
        answer("f", "Question: How? I won't.")


def test_advbench(shared_data):
    test = load(f"advbench:{shared_data}/advbench/harmful_behaviors.csv").split("test")
    assert len(test) == 520
    check_records(test)
    assert test[0]["instruction"].startswith("Write a script that can exploit vulnerabilities")
    assert test[0]["output"].startswith("Sure, here is")


def test_hhrlhf(shared_data):
    for arg in ("hh_rlhf_harmless/test.jsonl.gz", "hh_rlhf_harmless"):
        test = load(f"hhrlhf:{shared_data}/{arg}").split("test")
        assert len(test) == 2312
        check_records(test)
        assert test[0]["instruction"] == "what are some pranks with a pen i can do?"
        assert test[0]["output"] == "Are you looking for practical joke ideas?"
        assert not any("Human:" in r["instruction"] or "Assistant:" in r["output"] for r in test)
        assert sum(not r["output"] for r in test) == 3  # the data has three empty first replies


def test_prompts_only_file_loads_for_evaluation(shared_data):
    """A file without answers (here AdvBench's goals alone) gives records with output None."""
    prompts = load(f"file:{shared_data}/advbench/harmful_behaviors.csv?instruction=goal").split("train")
    assert len(prompts) == 520 and all(r["output"] is None and r["input"] == "" for r in prompts)
    assert prompts[0]["instruction"].startswith("Write a script that can exploit vulnerabilities")
    with pytest.raises(UserError, match="row 1: missing field 'answer'"):  # a mapped output stays required
        load(f"file:{shared_data}/advbench/harmful_behaviors.csv?instruction=goal&output=answer")


def test_file_mapping(shared_data):
    rows = load(f"file:{shared_data}/advbench/harmful_behaviors.csv?instruction=goal&output=target").split("train")
    assert len(rows) == 520 and rows[0]["input"] == ""
    gsm = load(f"file:{shared_data}/gsm8k/test.jsonl?instruction=question&output=answer").split("train")
    assert len(gsm) == 1319


def test_file_formats(tmp_path):
    (tmp_path / "a.tsv").write_text('instruction\toutput\tlabel\nsay "hi"\thi\t1\n')
    assert load(f"file:{tmp_path}/a.tsv").split("train") == [
        {"instruction": 'say "hi"', "input": "", "output": "hi", "label": "1"}]
    (tmp_path / "b.json").write_text('{"instruction": "x", "input": "y", "output": "z"}\n'
                                     '{"instruction": "u", "output": "v"}\n')  # JSON Lines under .json
    assert [r["input"] for r in load(f"file:{tmp_path}/b.json").split("train")] == ["y", ""]
    with gzip.open(tmp_path / "c.jsonl.gz", "wt") as f:
        f.write(json.dumps({"q": "1+1", "a": "2"}))
    assert load(f"file:{tmp_path}/c.jsonl.gz?instruction=q&output=a").split("train")[0]["output"] == "2"


def test_load_source_split(shared_data):
    pytest.importorskip("tvaccine.data.builtin")
    from tvaccine.data.sources import load_source

    s = load_source(f"sst2:{shared_data}/sst2@test")
    assert list(s.splits) == ["test"] and len(s.splits["test"]) == 872


# ---------------------------------------------------------------- bad input: one line, naming file/row/field

def one_line(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


def test_missing_file(tmp_path):
    with pytest.raises(UserError) as e:
        load(f"file:{tmp_path}/nope.jsonl")
    assert "nope.jsonl" in one_line(e) and "no such file" in one_line(e)
    with pytest.raises(UserError, match="no such file or directory"):
        load(f"sst2:{tmp_path}/missing")
    with pytest.raises(UserError, match="none of train.tsv, dev.tsv"):
        load(f"sst2:{tmp_path}")


def test_broken_jsonl_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"instruction": "a", "output": "b"}\n{"instruction": "c", "output": "d"}\n{"instruction": oops}\n')
    with pytest.raises(UserError) as e:
        load(f"file:{path}")
    assert "bad.jsonl" in one_line(e) and "line 3" in one_line(e)
    broken = tmp_path / "bad.json"
    broken.write_text('[\n{"instruction": "a",\n "output": }\n]')
    with pytest.raises(UserError, match="line 3"):
        load(f"file:{broken}")


def test_missing_field(tmp_path):
    path = tmp_path / "rows.csv"
    path.write_text("goal,target\nfirst,one\nsecond\n")
    with pytest.raises(UserError) as e:
        load(f"file:{path}?instruction=goal&output=target")
    assert all(part in one_line(e) for part in ("rows.csv", "row 2", "'target'"))
    gsm = tmp_path / "test.jsonl"
    gsm.write_text(json.dumps({"question": "q", "answer": "#### 1"}) + "\n" + json.dumps({"question": "q"}) + "\n")
    with pytest.raises(UserError) as e:
        load(f"gsm8k:{gsm}")
    assert all(part in one_line(e) for part in ("test.jsonl", "line 2", "'answer'"))
    sst = tmp_path / "train.tsv"
    sst.write_text("sentence\tlabel\ngood\t7\n")
    with pytest.raises(UserError, match=r"row 1: field 'label' must be one of \[0, 1\]"):
        load(f"sst2:{sst}")


def test_empty_and_unknown(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n  \n")
    with pytest.raises(UserError) as e:
        load(f"file:{empty}")
    assert "empty.jsonl" in one_line(e) and "empty" in one_line(e)
    header_only = tmp_path / "h.csv"
    header_only.write_text("goal,target\n")
    with pytest.raises(UserError, match="no data rows"):
        load(f"advbench:{header_only}")
    odd = tmp_path / "data.parquet"
    odd.write_bytes(b"PAR1")
    with pytest.raises(UserError, match="unknown format"):
        load(f"file:{odd}")
    obj = tmp_path / "obj.json"
    obj.write_text('{"instruction": "a"}')
    with pytest.raises(UserError, match="expected a JSON array"):
        load(f"file:{obj}")
    with pytest.raises(UserError, match="no field name"):
        load(f"file:{obj}?instruction=")


def fake_datasets(monkeypatch, load_dataset):
    fake = type(sys)("datasets")
    fake.load_dataset, fake.__version__ = load_dataset, "0-fake"
    monkeypatch.setitem(sys.modules, "datasets", fake)


def test_hub_failure_message(monkeypatch):
    """Neither mirror nor hub: one line naming the dataset, the fetch command and the mirror variable."""
    monkeypatch.delenv("TVACCINE_DATA", raising=False)

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach the Hub\n(offline)")

    fake_datasets(monkeypatch, offline)
    with pytest.raises(UserError) as e:
        load("sst2")
    message = one_line(e)
    assert message.startswith("sst2: glue (sst2) is not in the data mirror and the Hugging Face hub did not give it")
    assert "run `tvaccine data fetch sst2` while online, or set TVACCINE_DATA" in message
    assert message.endswith("or pass one as sst2:<path>")


def test_hub_failure_offline(tmp_path):
    """The real ``datasets`` in offline mode, in a fresh process so the env vars are read at import."""
    pytest.importorskip("datasets")
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))}
    env.pop("TVACCINE_DATA", None)
    code = ("from tvaccine.data import loaders\n"
            "from tvaccine.errors import UserError\n"
            "try:\n    loaders.gsm8k(None)\nexcept UserError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("gsm8k: gsm8k (main) is not in the data mirror")
    assert "tvaccine data fetch gsm8k" in out.stdout


def test_fetch_writes_the_hub_rows_into_the_mirror_and_a_source_then_reads_them_there(tmp_path, monkeypatch):
    """``tvaccine data fetch`` through a faked ``datasets``; afterwards the source never calls the hub."""
    from tvaccine.cli import main
    from tvaccine.data.sources import load_source

    rows = {"30k_train": [{"prompt": f"q{i}", "response": f"a{i}", "is_safe": i % 4 == 0,
                           "category": {"violence": True}} for i in range(40)],
            "30k_test": [{"prompt": "t", "response": "u", "is_safe": False, "category": {}}],
            "330k_train": [{"prompt": "x", "response": "y", "is_safe": False, "category": {}}]}
    calls = []

    def hub(*args, split=None, **kwargs):
        calls.append((args, split))
        return [rows[name] for name in split]

    fake_datasets(monkeypatch, hub)
    monkeypatch.setenv("TVACCINE_DATA", str(tmp_path / "mirror"))
    assert main(["data", "fetch", "beavertails"]) == 0
    dump = tmp_path / "mirror" / "beavertails" / "hub"
    assert sorted(p.name for p in dump.iterdir()) == ["30k_test.jsonl", "30k_train.jsonl", "source.json"]
    assert json.loads((dump / "source.json").read_text())["rows"] == {"30k_train": 40, "30k_test": 1}
    assert calls == [(("PKU-Alignment/BeaverTails",), ["30k_train", "30k_test"])]  # the 330k splits stay

    fake_datasets(monkeypatch, lambda *a, **k: pytest.fail("the mirror holds it: no hub call"))
    source = load_source("beavertails")
    unsafe = [f"q{i}" for i in range(40) if i % 4]
    assert sorted((r["instruction"] for r in source.split("train") + source.split("probe")),
                  key=lambda q: int(q[1:])) == unsafe
    assert [r["instruction"] for r in source.split("test")] == ["t"]


def test_the_mirror_reads_a_copy_in_the_datasets_own_layout(shared_data, monkeypatch):
    """../shared/data is such a copy: a source named without a path reads it instead of the hub."""
    from tvaccine.data.sources import load_source

    monkeypatch.setenv("TVACCINE_DATA", str(shared_data))
    assert load_source("sst2").splits.keys() == {"train", "test"}
    assert len(load_source("beavertails@probe").split("probe")) == 58


def test_fetch_without_a_mirror_folder_or_name_is_one_line(monkeypatch, capsys):
    from tvaccine.cli import main

    monkeypatch.delenv("TVACCINE_DATA", raising=False)
    assert main(["data", "fetch", "beavertails"]) == 2
    assert "data fetch needs a mirror folder: --to DIR or TVACCINE_DATA=DIR" in capsys.readouterr().err
    assert main(["data", "fetch", "nosuch", "--to", "/tmp/x"]) == 2
    assert "unknown dataset 'nosuch'" in capsys.readouterr().err


def test_unknown_file_key_names_the_key_and_the_valid_ones(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"instruction": "a"}\n')
    with pytest.raises(UserError) as e:
        load(f"file:{path}?foo=instruction")
    assert "unknown key 'foo'" in one_line(e) and "instruction, input, output, label, answer, category" in one_line(e)


def test_unterminated_csv_quote_is_reported_as_a_quote(tmp_path):
    path = tmp_path / "q.csv"
    path.write_text('instruction,output\nfine,yes\n"broken,no\nnext,row\n')
    with pytest.raises(UserError) as e:
        load(f"file:{path}")
    assert "q.csv" in one_line(e) and "unterminated quote" in one_line(e) and "line 3" in one_line(e)
    stray = tmp_path / "s.csv"
    stray.write_text('instruction,output\n"quoted"tail,no\n')
    with pytest.raises(UserError, match="s.csv: unreadable CSV at line 2"):
        load(f"file:{stray}")


@pytest.mark.parametrize("value,kind", [(["a", "b"], "a list"), (3, "a number"), ({"text": "x"}, "an object")])
def test_a_field_that_is_not_text_is_one_line(tmp_path, value, kind):
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps({"instruction": "ok", "output": "fine"}) + "\n"
                    + json.dumps({"instruction": value, "output": "fine"}) + "\n")
    with pytest.raises(UserError) as e:
        load(f"file:{path}")
    assert one_line(e) == f"{path}, line 2: field 'instruction' must be text, got {kind}"


def test_non_utf8_file_is_one_line_naming_the_file(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes('{"instruction": "caf\u00e9", "output": "x"}\n'.encode("latin-1"))
    with pytest.raises(UserError) as e:
        load(f"file:{path}")
    assert one_line(e).startswith(f"{path}: not UTF-8 text (byte 0xe9")
    gz = tmp_path / "bad.jsonl.gz"
    gz.write_bytes(b"not gzip at all")
    with pytest.raises(UserError, match="bad.jsonl.gz: cannot read"):
        load(f"file:{gz}")
