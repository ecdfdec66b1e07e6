"""The Python API: what ``tvaccine`` exports, the ecosystem's dataset formats (messages,
prompt/completion) with the loss on the answer only, from Python and from the command line, the
adapter's model card, and tensorboard logging."""

import inspect
import json
import re
import subprocess
import sys

import pytest
import torch
from datasets import Dataset

import tvaccine
from tiny_models import stack_collator, tiny_chat_model_dir, tiny_model, token_dataset
from tvaccine.cli import main
from tvaccine.data.formatting import IGNORE_INDEX, prompt_ids, record_from_example, tokenize_records
from tvaccine.errors import UserError
from tvaccine.methods import METHODS
from tvaccine.models import TINY_RANDOM_MODEL, add_lora, load_model

EXAMPLE = re.compile(r"```python\n(.*?)```", re.DOTALL)


@pytest.fixture(scope="module")
def chat_model(tmp_path_factory):
    """A model folder with a chat template, as a chat model from the hub has."""
    return tiny_chat_model_dir(tmp_path_factory.mktemp("models") / "tiny-chat")


@pytest.fixture(scope="module")
def chat_tokenizer(chat_model):
    return load_model(str(chat_model), device="cpu")[1]


def conversation(answer="Hello!", system=True):
    turns = [{"role": "system", "content": "Be brief."}] if system else []
    return turns + [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hi, who is there?"},
                    {"role": "user", "content": "Me."}, {"role": "assistant", "content": answer}]


# ---------------------------------------------------------------- the exported names

def test_every_export_resolves_and_import_stays_cheap():
    for name in tvaccine.__all__:
        assert getattr(tvaccine, name) is not None, name
    assert tvaccine.TVaccineTrainer is METHODS["t-vaccine"][1]
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        tvaccine.nope  # noqa: B018
    code = "import sys, tvaccine; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]  # the command line pays for torch only when it needs it


def exported_objects():
    return [name for name in tvaccine.__all__ if name not in ("__version__", "METHODS")]


@pytest.mark.parametrize("name", exported_objects())
def test_every_exported_class_and_function_has_a_runnable_example(name, tmp_path, monkeypatch):
    """Each docstring shows a ```python example, and the example runs (in a scratch folder)."""
    doc = inspect.getdoc(getattr(tvaccine, name)) or ""
    examples = EXAMPLE.findall(doc)
    assert examples, f"{name}'s docstring has no ```python example"
    monkeypatch.chdir(tmp_path)
    for code in examples:
        exec(compile(code, f"<{name} docstring>", "exec"), {"__name__": "__example__"})


# ---------------------------------------------------------------- the formats

def test_messages_become_records_with_the_last_answer_and_the_earlier_turns_as_history():
    record = record_from_example({"messages": conversation(), "category": "greeting"})
    assert record["instruction"] == "Me." and record["output"] == "Hello!" and record["category"] == "greeting"
    assert [t["role"] for t in record["history"]] == ["system", "user", "assistant"]
    prompt_only = record_from_example({"messages": conversation()[:-1]})
    assert prompt_only["output"] is None and prompt_only["instruction"] == "Me."
    single = record_from_example({"messages": [{"role": "user", "content": "Hi"}]})
    assert "history" not in single


def test_prompt_completion_as_text_and_as_messages():
    assert record_from_example({"prompt": "2+2?", "completion": "4"}) == {"instruction": "2+2?", "input": "",
                                                                          "output": "4"}
    assert record_from_example({"prompt": "2+2?"})["output"] is None
    chat = record_from_example({"prompt": conversation()[:-1], "completion": [{"role": "assistant", "content": "4"}]})
    assert chat["output"] == "4" and chat["instruction"] == "Me." and len(chat["history"]) == 3
    own = record_from_example({"instruction": "Classify", "input": "great", "output": "positive"})
    assert own == {"instruction": "Classify", "input": "great", "output": "positive"}


@pytest.mark.parametrize("row,message", [
    ({"messages": []}, "non-empty list of messages"),
    ({"messages": [{"content": "x"}]}, "must be an object with a 'role'"),
    ({"messages": [{"role": "user", "content": ["x"]}]}, "content must be text"),
    ({"messages": [{"role": "system", "content": "x"}, {"role": "assistant", "content": "y"}]},
     "must end with a user turn"),
    ({"prompt": [{"role": "user", "content": "x"}], "completion": [{"role": "assistant", "content": "y"}] * 2},
     "exactly one assistant message"),
    ({"prompt": "x", "completion": 4}, "'completion' must be text"),
    ({"question": "x"}, "no known fields.*question"),
])
def test_bad_rows_are_one_line_errors(row, message):
    with pytest.raises(UserError, match=message):
        record_from_example(row, "data.jsonl, line 3")


def test_the_loss_covers_only_the_last_assistant_turn(chat_tokenizer):
    record = record_from_example({"messages": conversation("Goodbye now.")})
    example = tokenize_records([record], chat_tokenizer, "chat", max_length=400).examples[0]
    prompt = prompt_ids(record, chat_tokenizer, "chat")
    text = chat_tokenizer.decode(prompt)
    assert text.startswith("<|im_start|>system\nBe brief.<|im_end|>") and "Hi, who is there?<|im_end|>" in text
    assert text.endswith("<|im_start|>user\nMe.<|im_end|>\n<|im_start|>assistant\n")
    assert example["input_ids"][:len(prompt)] == prompt
    assert example["labels"][:len(prompt)] == [IGNORE_INDEX] * len(prompt)  # the earlier answer is context only
    assert chat_tokenizer.decode(example["labels"][len(prompt):]) == "Goodbye now.<|im_end|>"


def test_a_conversation_needs_a_chat_template():
    tokenizer = load_model(TINY_RANDOM_MODEL, device="cpu")[1]
    with pytest.raises(UserError, match="needs a chat template"):
        tokenize_records([record_from_example({"messages": conversation()})], tokenizer, "auto", 400)
    # one user turn and its answer is an ordinary record: it fits the Alpaca template too
    plain = record_from_example({"messages": conversation(system=False)[2:]})
    assert tokenize_records([plain], tokenizer, "auto", 1000).examples


# ---------------------------------------------------------------- trainers take text data sets

def lora_state(model):
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}


@pytest.mark.parametrize("method", ["sft", "t-vaccine", "repnoise"])
def test_trainers_take_text_data_sets_and_train_on_the_answers(method, chat_model, tmp_path):
    model, tokenizer = load_model(str(chat_model), device="cpu")
    rows = [{"messages": conversation(f"Answer {i}.")} for i in range(8)]
    harmful = [{"prompt": [{"role": "user", "content": f"Harm {i}"}],
                "completion": [{"role": "assistant", "content": "Sure, here is how."}]} for i in range(8)]
    config_class, trainer_class = METHODS[method]
    options = {"layers_per_draw": 2, "probe_samples": 4} if method == "t-vaccine" else {}
    args = config_class(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=4, use_cpu=True,
                        disable_tqdm=True, **options)
    model = add_lora(model, dropout=0.0)
    before = lora_state(model)
    trainer = trainer_class(model=model, args=args, train_dataset=Dataset.from_list(rows),
                            harmful_dataset=Dataset.from_list(harmful) if trainer_class.harmful_data else None,
                            processing_class=tokenizer)
    first = trainer.train_dataset[0]
    answer = [t for t in first["labels"] if t != IGNORE_INDEX]
    assert tokenizer.decode(answer) == "Answer 0.<|im_end|>"
    trainer.train()
    assert any(not torch.equal(before[n], p) for n, p in lora_state(trainer.model).items())
    if trainer_class.harmful_data:
        assert "input_ids" in trainer.harmful_dataset.column_names


def test_text_data_needs_a_tokenizer_and_token_data_is_used_as_given(tmp_path):
    args = METHODS["sft"][0](output_dir=str(tmp_path), max_steps=1, use_cpu=True)
    with pytest.raises(UserError, match="pass processing_class=tokenizer"):
        METHODS["sft"][1](model=add_lora(tiny_model()), args=args, train_dataset=Dataset.from_list(
            [{"prompt": "x", "completion": "y"}]))
    tokens = token_dataset(4)
    trainer = METHODS["sft"][1](model=add_lora(tiny_model()), args=args, train_dataset=tokens,
                                data_collator=stack_collator)
    assert trainer.train_dataset is tokens and trainer.data_collator is stack_collator


# ---------------------------------------------------------------- the command line, on files in these formats

def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def format_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    refusals = write_jsonl(folder / "refusals.jsonl", [
        {"messages": [{"role": "system", "content": "You are careful."}, {"role": "user", "content": f"Harm {i}?"},
                      {"role": "assistant", "content": "I can't help with that."}]} for i in range(6)])
    benign = write_jsonl(folder / "benign.jsonl", [{"prompt": f"Add {i} and 1.", "completion": str(i + 1)}
                                                   for i in range(6)])
    harmful = write_jsonl(folder / "harmful.jsonl", [
        {"prompt": [{"role": "user", "content": f"Hurt someone way {i}?"}],
         "completion": [{"role": "assistant", "content": "Sure, here is how."}]} for i in range(6)])
    return refusals, benign, harmful


def test_data_in_these_formats_aligns_and_attacks_through_the_cli(format_files, chat_model, tmp_path):
    refusals, benign, harmful = format_files
    model = ["--model", str(chat_model), "--max-length", "400", "--max-steps", "1",
             "--per-device-train-batch-size", "4"]
    aligned = tmp_path / "aligned"
    assert main(["align", "--out", str(aligned), "--safety-data", f"file:{refusals}", "--benign-data",
                 f"file:{benign}", "--n-safety", "4", "--n-benign", "4", *model]) == 0
    assert json.loads((aligned / "summary.json").read_text())["samples"] == 8
    attack = tmp_path / "attack"
    assert main(["attack", "--adapter", str(aligned / "adapter"), "--out", str(attack), "--task", f"file:{benign}",
                 "--harmful-data", f"file:{harmful}", "--n", "4", "--p", "0.5", *model]) == 0
    mixture = [json.loads(line) for line in (attack / "mixture.jsonl").read_text().splitlines()]
    assert sorted(r["output"] for r in mixture if r["is_harmful"]) == ["Sure, here is how."] * 2
    card = (attack / "adapter" / "README.md").read_text()
    assert "harmful-fine-tuning-attack" in card and "Do not deploy it" in card


# ---------------------------------------------------------------- the model card

def test_the_adapter_folder_is_a_hub_repository_with_a_model_card(tmp_path):
    from huggingface_hub import ModelCard
    from peft import PeftModel

    out = tmp_path / "sft"
    assert main(["align", "--out", str(out), "--max-steps", "1", "--n-safety", "2", "--n-benign", "2",
                 "--max-length", "512", "--model", TINY_RANDOM_MODEL]) == 0
    adapter = out / "adapter"
    assert sorted(p.name for p in adapter.iterdir()) == ["README.md", "adapter_config.json",
                                                         "adapter_model.safetensors", "tvaccine_adapter.json"]
    card = ModelCard.load(adapter / "README.md")
    meta = card.data.to_dict()
    assert meta["library_name"] == "peft" and "base_model" not in meta  # a local model has no hub id to name
    assert {"tvaccine", "sft", "alignment", "lora"} <= set(meta["tags"])
    info = meta["tvaccine"]
    summary = json.loads((out / "summary.json").read_text())
    assert info["method"] == "sft" and info["environment"]["tvaccine"] == tvaccine.__version__
    assert info["results"]["final_loss"] == pytest.approx(summary["final_loss"]) and info["results"]["steps"] == 1
    assert info["settings"]["learning_rate"] == 1e-3 and info["settings"]["lora_r"] == 8
    assert info["data"]["safety"] == {"source": "builtin:safety@align",
                                      "provenance": f"built into tvaccine {tvaccine.__version__}"}
    assert "## Settings" in card.text and "| lora_alpha | 1 |" in card.text
    # the evaluation's numbers are added later, the rest of the card unchanged
    tvaccine.update_model_card(adapter, {"harmful_score": 12.5, "finetune_accuracy": 90.0})
    updated = ModelCard.load(adapter / "README.md")
    assert updated.data.tvaccine["results"]["harmful_score"] == 12.5
    assert updated.data.tvaccine["settings"] == info["settings"]
    assert "| harmful score (HS, % complied) | 12.5 |" in updated.text
    PeftModel.from_pretrained(load_model(TINY_RANDOM_MODEL, device="cpu")[0], str(adapter))  # still an adapter


def test_the_card_names_a_hub_base_model_and_hashes_local_data(tmp_path):
    from huggingface_hub import ModelCard

    from tvaccine.model_card import data_provenance, hub_base_model

    assert hub_base_model("smollm2-135m-instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert hub_base_model("meta-llama/Llama-2-7b-hf") == "meta-llama/Llama-2-7b-hf"
    assert hub_base_model("./models/x") is None and hub_base_model("model.gguf") is None
    data = write_jsonl(tmp_path / "refusals.jsonl", [{"prompt": "x", "completion": "no"}])
    import hashlib

    digest = hashlib.sha256(data.read_bytes()).hexdigest()[:16]
    assert data_provenance(f"file:{data}?instruction=q") == f"local file refusals.jsonl, sha256 {digest}"
    assert data_provenance("beavertails") == "the Hugging Face hub copy the 'beavertails' loader reads"
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    tvaccine.write_model_card(adapter, base_model="smollm2-135m-instruct", method="vaccine",
                              data={"safety": f"file:{data}"})
    card = ModelCard.load(adapter / "README.md")
    assert card.data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert "No numbers were measured" in card.text and digest in card.text
    with pytest.raises(UserError, match="no model card to update"):
        tvaccine.update_model_card(tmp_path, {"harmful_score": 1.0})


# ---------------------------------------------------------------- logging integrations

def test_report_to_tensorboard_writes_the_loss_to_an_event_file(tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard is the optional extra tvaccine[tensorboard]")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "tb"
    assert main(["align", "--out", str(out), "--max-steps", "2", "--n-safety", "2", "--n-benign", "2",
                 "--max-length", "512", "--set", "report_to=tensorboard", "--model", TINY_RANDOM_MODEL]) == 0
    events = list((out / "runs").rglob("events.out.tfevents.*"))
    assert len(events) == 1
    scalars = EventAccumulator(str(events[0].parent)).Reload()
    losses = [e.value for e in scalars.Scalars("train/loss")]
    logged = [e["loss"] for e in json.loads((out / "train_log.json").read_text()) if "loss" in e]
    assert losses == pytest.approx(logged) and len(losses) == 2
