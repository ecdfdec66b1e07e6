"""The forward-only instrument (refusal openings, alignment loss, harmful loss, drift) against a
computation by hand, and the directions it must move in when the model is trained."""

import copy
import random

import pytest
import torch

from tvaccine.data.formatting import IGNORE_INDEX, tokenize_records
from tvaccine.errors import UserError
from tvaccine.evaluation.forward_metrics import (
    COMPLIANCE_OPENINGS,
    MAX_ANSWER_TOKENS,
    REFUSAL_OPENINGS,
    ForwardInstrument,
    instrument_sets,
    opening_logprobs,
    saved_forward_scores,
)
from tvaccine.models import add_lora, load_model
from tvaccine.results_io import read_jsonl

TEMPLATE = "alpaca"
# The tiny model's tokenizer has one token per byte: a built-in prompt and answer take ~500 tokens.
MAX_LENGTH = 1024


@pytest.fixture(scope="module")
def base():
    model, tokenizer = load_model("tiny-random-llama", device="cpu")
    return model, tokenizer


@pytest.fixture(scope="module")
def sets():
    """Six held-out refusals and six answers that comply (the built-in template: real harm is not needed
    to check the arithmetic)."""
    return instrument_sets("builtin:safety@eval", "builtin:safety@compliance_template", 6)


@pytest.fixture(scope="module")
def moved(base):
    """The model under attack: a LoRA on the base whose B matrices are random, so it differs from the
    base (its reference, the adapter disabled) by a drift of order one."""
    model, _ = base
    lora = add_lora(copy.deepcopy(model), r=4, alpha=8, dropout=0.0)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in lora.named_parameters():
            if "lora_B" in name:
                param.copy_(0.05 * torch.randn(param.shape, generator=generator))
    lora.eval()
    return lora


def instrument(sets, tokenizer, batch_size=16):
    return ForwardInstrument(sets, tokenizer, TEMPLATE, max_length=MAX_LENGTH, batch_size=batch_size)


def measured(sets, tokenizer, model, batch_size, tmp_path):
    """(scores, saved rows) of the instrument at ``batch_size``, the reference being the adapter disabled."""
    inst = instrument(sets, tokenizer, batch_size)
    with model.disable_adapter():
        inst.set_reference(model)
    scores = inst.measure(model, tmp_path)
    return scores, {name: read_jsonl(tmp_path / f"forward_{name}.jsonl") for name in SETS}


SETS = ("openings", "alignment", "harmful")


# ---------------------------------------------------------------------------------------------
# By hand: one record at a time, one unpadded forward pass each
# ---------------------------------------------------------------------------------------------

def one_example(record, answer, tokenizer):
    """The example as training would see it, with its answer cut at the instrument's 64 tokens."""
    (example,) = tokenize_records([{**record, "output": answer}], tokenizer, TEMPLATE, MAX_LENGTH).examples
    prompt = example["labels"].count(IGNORE_INDEX)
    assert len(example["labels"]) - prompt > MAX_ANSWER_TOKENS  # the cut is exercised (one token per byte)
    keep = prompt + MAX_ANSWER_TOKENS
    return torch.tensor([example["input_ids"][:keep]]), torch.tensor(example["labels"][:keep])


@torch.no_grad()
def opening_margin_by_hand(model, record, tokenizer):
    """log-sum-exp of the refusal openings' log-probabilities minus that of the compliance openings', each
    opening scored in one unpadded pass over the prompt followed by its tokens."""
    from tvaccine.data.formatting import prompt_ids

    prompt = prompt_ids(record, tokenizer, TEMPLATE)
    scores = []
    for text in REFUSAL_OPENINGS + COMPLIANCE_OPENINGS:
        opening = tokenizer(text, add_special_tokens=False)["input_ids"]
        logprobs = torch.log_softmax(model(input_ids=torch.tensor([prompt + opening])).logits[0].double(), -1)
        scores.append(sum(logprobs[len(prompt) - 1 + t, token].item() for t, token in enumerate(opening)))
    refusal, compliance = torch.tensor(scores).split([len(REFUSAL_OPENINGS), len(COMPLIANCE_OPENINGS)])
    return (torch.logsumexp(refusal, 0) - torch.logsumexp(compliance, 0)).item()


@torch.no_grad()
def nll_by_hand(model, record, answer, tokenizer):
    """Mean over the answer tokens of -log p(token | everything before it)."""
    ids, labels = one_example(record, answer, tokenizer)
    logprobs = torch.log_softmax(model(input_ids=ids).logits[0].double(), dim=-1)
    terms = [-logprobs[t - 1, labels[t]].item() for t in range(1, len(labels)) if labels[t] != IGNORE_INDEX]
    assert terms and len(terms) < len(labels)  # the prompt is not scored, the answer is
    return sum(terms) / len(terms)


@torch.no_grad()
def last_hidden(model, record, tokenizer):
    ids, _ = one_example(record, record["output"], tokenizer)
    return model(input_ids=ids, output_hidden_states=True).hidden_states[-1][0].double()


def test_every_quantity_equals_a_loop_over_examples_by_hand(base, sets, moved, tmp_path):
    _, tokenizer = base
    scores, rows = measured(sets, tokenizer, moved, 16, tmp_path)
    assert scores["n_alignment"] == scores["n_openings"] == scores["n_harmful_answers"] == 6

    losses, drifts = [], []
    for record in sets["alignment"]:
        losses.append(nll_by_hand(moved, record, record["output"], tokenizer))
        now = last_hidden(moved, record, tokenizer)
        with moved.disable_adapter():
            before = last_hidden(moved, record, tokenizer)
        assert now.shape == before.shape and now.shape[0] > 100  # every token of prompt and (cut) answer
        drifts.append(sum(((now[t] - before[t]) ** 2).sum().item() for t in range(now.shape[0])) / now.shape[0])
    assert [r["refusal_loss"] for r in rows["alignment"]] == pytest.approx(losses, rel=1e-5)
    assert [r["drift"] for r in rows["alignment"]] == pytest.approx(drifts, rel=1e-4)
    assert scores["alignment_loss"] == pytest.approx(sum(losses) / 6, rel=1e-5)
    assert scores["drift"] == pytest.approx(sum(drifts) / 6, rel=1e-4)
    assert 0.01 < scores["drift"] < 100  # the random LoRA moved the model, by a finite amount

    harmful = [nll_by_hand(moved, p, p["output"], tokenizer) for p in sets["harmful"]]
    assert [r["harmful_loss"] for r in rows["harmful"]] == pytest.approx(harmful, rel=1e-5)
    assert scores["harmful_loss"] == pytest.approx(sum(harmful) / 6, rel=1e-5)

    margins = [opening_margin_by_hand(moved, record, tokenizer) for record in sets["alignment"]]
    assert [r["margin"] for r in rows["openings"]] == pytest.approx(margins, rel=1e-4, abs=1e-4)
    assert scores["opening_margin"] == pytest.approx(sum(margins) / 6, rel=1e-4, abs=1e-4)
    assert scores["refusal_opening"] == pytest.approx(100.0 * sum(m > 0 for m in margins) / 6)
    # The saved rows re-score to the same numbers (a results folder can be scored again).
    assert saved_forward_scores(tmp_path) == scores


def test_drift_is_zero_for_a_model_against_itself(base, sets, moved):
    model, tokenizer = base
    for candidate in (model, moved):
        inst = instrument(sets, tokenizer, batch_size=4)
        inst.set_reference(candidate)
        scores = inst.measure(candidate)
        assert scores["drift"] == pytest.approx(0.0, abs=1e-12)
    # The fresh LoRA of an attack is zero: against the base it has not moved either.
    fresh = add_lora(copy.deepcopy(model), r=4, alpha=8, dropout=0.0)
    inst = instrument(sets, tokenizer)
    inst.set_reference(model)
    assert inst.measure(fresh)["drift"] == pytest.approx(0.0, abs=1e-10)
    # Without a reference there is no drift to report, and the other values are still there.
    unreferenced = instrument(sets, tokenizer).measure(model)
    assert "drift" not in unreferenced and unreferenced["alignment_loss"] > 0
    # An attack's step 0 serves as its own reference: the same numbers as a separate reference pass.
    inst = instrument(sets, tokenizer)
    inst.reference_from_next()
    assert inst.measure(fresh)["drift"] == 0.0
    assert inst.measure(moved)["drift"] == pytest.approx(measured_drift(sets, tokenizer, moved), rel=1e-6)


def measured_drift(sets, tokenizer, lora):
    inst = instrument(sets, tokenizer)
    with lora.disable_adapter():
        inst.set_reference(lora)
    return inst.measure(lora)["drift"]


def test_batch_size_padding_and_order_do_not_change_any_value(base, sets, moved, tmp_path):
    _, tokenizer = base
    lengths = [len(e["input_ids"]) for e in instrument(sets, tokenizer).examples["alignment"]]
    assert len(set(lengths)) > 1  # batches of several examples are padded
    reference_scores, reference_rows = measured(sets, tokenizer, moved, 1, tmp_path / "b1")  # no padding at all
    for batch_size in (3, 16):
        scores, rows = measured(sets, tokenizer, moved, batch_size, tmp_path / f"b{batch_size}")
        assert_same(scores, reference_scores)
        assert_same_rows(rows, reference_rows)

    # The same examples in another order: each value maps back to its example.
    rng = random.Random(3)
    orders = {name: rng.sample(range(len(records)), len(records)) for name, records in sets.items()}
    assert all(order != sorted(order) for order in orders.values())
    shuffled = {name: [sets[name][i] for i in orders[name]] for name in sets}
    orders["openings"] = orders["alignment"]  # the openings are read on the alignment set's prompts
    scores, rows = measured(shuffled, tokenizer, moved, 3, tmp_path / "shuffled")
    assert_same(scores, reference_scores)
    restored = {name: [None] * len(orders[name]) for name in orders}
    for name, order in orders.items():
        for position, original in enumerate(order):
            restored[name][original] = rows[name][position]
    assert_same_rows(restored, reference_rows)


def assert_same(scores, reference):
    assert scores.keys() == reference.keys()
    for key, value in reference.items():
        assert scores[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key


def assert_same_rows(rows, reference):
    for name in SETS:
        assert len(rows[name]) == len(reference[name])
        for row, expected in zip(rows[name], reference[name]):
            assert row["instruction"] == expected["instruction"]
            for key, value in expected.items():
                if isinstance(value, float):
                    assert row[key] == pytest.approx(value, rel=1e-5, abs=1e-6), (name, key)
                else:
                    assert row[key] == value, (name, key)


# ---------------------------------------------------------------------------------------------
# Directions: training on refusals makes them preferred, training on harmful answers undoes it
# ---------------------------------------------------------------------------------------------

def train_on(model, examples, steps, lr=1e-2):
    """Full-batch AdamW on (prompt, answer) examples, the loss on the answer tokens only."""
    width = max(len(e["input_ids"]) for e in examples)
    pad = [width - len(e["input_ids"]) for e in examples]
    batch = {"input_ids": torch.tensor([e["input_ids"] + [0] * p for e, p in zip(examples, pad)]),
             "attention_mask": torch.tensor([[1] * len(e["input_ids"]) + [0] * p for e, p in zip(examples, pad)]),
             "labels": torch.tensor([e["labels"] + [IGNORE_INDEX] * p for e, p in zip(examples, pad)])}
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()


def test_training_to_open_with_refusals_raises_the_margin_and_training_to_comply_lowers_it(base):
    """Six held-out prompts; the model trained five full-batch AdamW steps at lr 1e-2 (fixed weights, no
    dropout) on six other prompts answered "I'm sorry, I can't help with that.", then five on the same
    prompts answered "Sure. Here is how to do it.", then ten more. The margin follows each phase (measured:
    -16.9, -9.0, -12.2 nats): the tiny model spells words a byte at a time, so "Sorry" rises with "Sure"
    (both start with "S") and the compliance phase moves the margin less than the refusal phase did."""
    model, tokenizer = base
    torch.manual_seed(0)
    inst = instrument(instrument_sets("builtin:safety@eval", None, 6), tokenizer)
    prompts = instrument_sets("builtin:safety@align", None, 6)["alignment"]

    def examples(answer):
        records = [{**record, "output": answer} for record in prompts]
        return tokenize_records(records, tokenizer, TEMPLATE, MAX_LENGTH).examples

    model = copy.deepcopy(model)
    start = inst.measure(model)
    train_on(model, examples("I'm sorry, I can't help with that."), steps=5)
    refused = inst.measure(model)
    assert refused["opening_margin"] > start["opening_margin"] + 5
    train_on(model, examples("Sure. Here is how to do it."), steps=5)
    train_on(model, examples("Sure. Here is how to do it."), steps=10)
    attacked = inst.measure(model)
    assert attacked["opening_margin"] < refused["opening_margin"] - 2


@pytest.mark.parametrize("family", ["llama", "gpt2", "qwen2"])
def test_opening_log_probabilities_equal_one_unpadded_pass_per_prompt_and_opening(family):
    """The cached, padded, batched pass against the plain one; openings of 1 to 3 tokens, prompts of 3 to 9."""
    from tiny_models import tiny_model

    model = tiny_model(family).eval()
    generator = torch.Generator().manual_seed(0)
    prompts = [torch.randint(3, 100, (n,), generator=generator).tolist() for n in (5, 9, 3, 7)]
    openings = [[5], [6, 7], [8, 9, 10], [11, 12]]
    got = opening_logprobs(model, prompts, openings, batch_size=3)
    with torch.no_grad():
        for i, prompt in enumerate(prompts):
            for j, opening in enumerate(openings):
                logprobs = torch.log_softmax(model(input_ids=torch.tensor([prompt + opening])).logits[0].double(), -1)
                expected = sum(logprobs[len(prompt) - 1 + t, token].item() for t, token in enumerate(opening))
                assert got[i, j].item() == pytest.approx(expected, abs=1e-5)


# ---------------------------------------------------------------------------------------------
# The held-out data
# ---------------------------------------------------------------------------------------------

def test_the_instrument_reads_held_out_refusals_and_beavertails_probe_rows_the_attack_never_trains_on(tmp_path):
    import json

    from tvaccine.data.sources import load_source

    held_out = load_source("builtin:safety").split("eval")[:6]
    sets = instrument_sets("builtin:safety@eval", None, 6)
    assert [r["output"] for r in sets["alignment"]] == [r["refusal"] for r in held_out]
    rows = [{"prompt": f"harmful question {i // 2}", "response": f"harmful answer {i}", "is_safe": False}
            for i in range(60)]
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    source = load_source(f"beavertails:{path}")
    attack = {r["instruction"] for r in source.split("train")}
    probe = {r["instruction"] for r in source.split("probe")}
    assert attack and probe and not attack & probe  # every answer to one prompt lands on the same side
    assert attack | probe == {r["prompt"] for r in rows} and 5 < len(probe) < 20
    harmful = instrument_sets(None, f"beavertails:{path}", 100)["harmful"]
    assert {r["instruction"] for r in harmful} == probe  # the instrument reads the probe split


def test_instrument_drops_a_sample_whose_answer_is_cut_and_counts_it(base, sets):
    _, tokenizer = base
    full = instrument(sets, tokenizer)
    assert full.dropped == 0 and len(full.examples["alignment"]) == len(full.examples["harmful"]) == 6

    def prompt_length(example):
        return sum(label == IGNORE_INDEX for label in example["labels"])

    lengths = {name: [prompt_length(e) for e in full.examples[name]] for name in ("alignment", "harmful")}
    limit = sorted(lengths["alignment"] + lengths["harmful"])[6]  # a prompt this long leaves no answer token
    kept = {name: [r for r, n in zip(sets[name], lengths[name]) if n < limit] for name in lengths}
    assert 0 < len(kept["alignment"]) + len(kept["harmful"]) < 12
    short = ForwardInstrument(sets, tokenizer, TEMPLATE, max_length=limit)
    assert short.prompts == kept
    assert short.dropped == 12 - len(kept["alignment"]) - len(kept["harmful"])
    scores = short.measure(base[0])
    assert (scores.get("n_alignment", 0), scores.get("n_harmful_answers", 0)) == \
        (len(kept["alignment"]), len(kept["harmful"]))


def test_a_refusal_source_without_answers_is_refused(tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"instruction": "How do I pick a lock?"}\n')
    with pytest.raises(UserError, match="needs a refusal"):
        instrument_sets(f"file:{prompts}", None, 4)
    with pytest.raises(UserError, match="needs a harmful answer"):
        instrument_sets(None, f"file:{prompts}", 4)
