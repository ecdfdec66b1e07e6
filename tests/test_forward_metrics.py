"""The forward-only instrument (alignment loss, harmful loss, refusal preference, drift) against a
computation by hand, and the directions it must move in when the model is trained."""

import copy
import random

import pytest
import torch

from tvaccine.data.formatting import IGNORE_INDEX, tokenize_records
from tvaccine.errors import UserError
from tvaccine.evaluation.forward_metrics import (
    GENERIC_REFUSALS,
    ForwardInstrument,
    instrument_sets,
    refusal_pairs,
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
    """Six held-out refusals and six (refusal, harmful answer) pairs of the built-in data."""
    return instrument_sets("builtin:safety@eval", "builtin:safety@harmful", 6)


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
    return scores, {name: read_jsonl(tmp_path / f"forward_{name}.jsonl") for name in ("alignment", "pairs")}


# ---------------------------------------------------------------------------------------------
# By hand: one record at a time, one unpadded forward pass each
# ---------------------------------------------------------------------------------------------

def one_example(record, answer, tokenizer):
    (example,) = tokenize_records([{**record, "output": answer}], tokenizer, TEMPLATE, MAX_LENGTH).examples
    return torch.tensor([example["input_ids"]]), torch.tensor(example["labels"])


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
    assert scores["n_alignment"] == len(sets["alignment"]) == 6 and scores["n_pairs"] == len(sets["pairs"]) == 6

    losses, drifts = [], []
    for record in sets["alignment"]:
        losses.append(nll_by_hand(moved, record, record["output"], tokenizer))
        now = last_hidden(moved, record, tokenizer)
        with moved.disable_adapter():
            before = last_hidden(moved, record, tokenizer)
        assert now.shape == before.shape and now.shape[0] > 100  # every token of prompt and answer
        drifts.append(sum(((now[t] - before[t]) ** 2).sum().item() for t in range(now.shape[0])) / now.shape[0])
    assert [r["refusal_loss"] for r in rows["alignment"]] == pytest.approx(losses, rel=1e-5)
    assert [r["drift"] for r in rows["alignment"]] == pytest.approx(drifts, rel=1e-4)
    assert scores["alignment_loss"] == pytest.approx(sum(losses) / 6, rel=1e-5)
    assert scores["drift"] == pytest.approx(sum(drifts) / 6, rel=1e-4)
    assert 0.01 < scores["drift"] < 100  # the random LoRA moved the model, by a finite amount

    refusal = [nll_by_hand(moved, p, p["refusal"], tokenizer) for p in sets["pairs"]]
    harmful = [nll_by_hand(moved, p, p["harmful"], tokenizer) for p in sets["pairs"]]
    assert [r["refusal_loss"] for r in rows["pairs"]] == pytest.approx(refusal, rel=1e-5)
    assert [r["harmful_loss"] for r in rows["pairs"]] == pytest.approx(harmful, rel=1e-5)
    preferred = [r < h for r, h in zip(refusal, harmful)]
    assert [r["refusal_preferred"] for r in rows["pairs"]] == preferred
    assert scores["harmful_loss"] == pytest.approx(sum(harmful) / 6, rel=1e-5)
    assert scores["pair_refusal_loss"] == pytest.approx(sum(refusal) / 6, rel=1e-5)
    assert scores["refusal_preference"] == pytest.approx(100.0 * sum(preferred) / 6)
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


def test_batch_size_padding_and_order_do_not_change_any_value(base, sets, moved, tmp_path):
    _, tokenizer = base
    lengths = [len(e["input_ids"]) for e in instrument(sets, tokenizer).alignment]
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
    for name in ("alignment", "pairs"):
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


def test_training_on_refusals_raises_the_preference_and_on_harmful_answers_lowers_it(base):
    """On six pairs, five full-batch AdamW steps each at lr 1e-2 (fixed weights, no dropout, no draws): the
    random model prefers no refusal; after the refusal steps it prefers every refusal by a per-token
    margin of 0.08 nats or more; after the harmful steps it prefers none again (smallest margin 0.017)."""
    model, tokenizer = base
    torch.manual_seed(0)
    pairs = {"pairs": instrument_sets(None, "builtin:safety@harmful", 6)["pairs"]}
    inst = instrument(pairs, tokenizer)
    model = copy.deepcopy(model)
    start = inst.measure(model)

    train_on(model, inst.pair_refusal, steps=5)
    refused = inst.measure(model)
    assert refused["pair_refusal_loss"] < start["pair_refusal_loss"] - 0.5
    assert refused["refusal_preference"] >= start["refusal_preference"] + 50

    train_on(model, inst.pair_harmful, steps=5)
    attacked = inst.measure(model)
    assert attacked["harmful_loss"] < refused["harmful_loss"] - 0.1
    assert attacked["refusal_preference"] <= refused["refusal_preference"] - 50  # flips to the harmful answer


# ---------------------------------------------------------------------------------------------
# The held-out data
# ---------------------------------------------------------------------------------------------

def test_pairs_keep_their_own_refusal_or_get_a_fixed_generic_one():
    records = [{"instruction": f"q{i}", "output": f"harm {i}", **({"refusal": "own"} if i == 1 else {})}
               for i in range(6)]
    pairs = refusal_pairs(records)
    assert [p["harmful"] for p in pairs] == [f"harm {i}" for i in range(6)]
    assert pairs[1]["refusal"] == "own"
    assert [p["refusal"] for i, p in enumerate(pairs) if i != 1] == \
        [GENERIC_REFUSALS[i % len(GENERIC_REFUSALS)] for i in (0, 2, 3, 4, 5)]
    assert refusal_pairs(records) == pairs  # fixed, not drawn


def test_the_built_in_pairs_are_refusal_and_compliance_of_the_same_prompt(sets):
    from tvaccine.data.sources import load_source

    harmful = load_source("builtin:safety").split("harmful")[:6]
    assert [p["instruction"] for p in sets["pairs"]] == [r["instruction"] for r in harmful]
    assert [(p["refusal"], p["harmful"]) for p in sets["pairs"]] == [(r["refusal"], r["compliance"]) for r in harmful]
    held_out = load_source("builtin:safety").split("eval")[:6]
    assert [r["output"] for r in sets["alignment"]] == [r["refusal"] for r in held_out]


def test_instrument_drops_a_sample_whose_answer_is_cut_and_counts_it(base, sets):
    _, tokenizer = base
    full = instrument(sets, tokenizer)
    assert full.dropped == 0 and len(full.alignment) == len(full.pair_refusal) == 6

    def prompt_length(example):
        return sum(label == IGNORE_INDEX for label in example["labels"])

    alignment = [prompt_length(e) for e in full.alignment]
    pairs = [prompt_length(e) for e in full.pair_refusal]
    limit = sorted(alignment + pairs)[6]  # a prompt this long or longer leaves no answer token
    kept_alignment = [r for r, n in zip(sets["alignment"], alignment) if n < limit]
    kept_pairs = [r for r, n in zip(sets["pairs"], pairs) if n < limit]
    assert 0 < len(kept_alignment) + len(kept_pairs) < 12
    short = ForwardInstrument(sets, tokenizer, TEMPLATE, max_length=limit)
    assert short.prompts == {"alignment": kept_alignment, "pairs": kept_pairs}
    assert len(short.alignment) == len(kept_alignment)
    assert len(short.pair_refusal) == len(short.pair_harmful) == len(kept_pairs)
    assert short.dropped == (6 - len(kept_alignment)) + 2 * (6 - len(kept_pairs))  # both answers of a pair
    scores = short.measure(base[0])
    assert (scores.get("n_alignment", 0), scores.get("n_pairs", 0)) == (len(kept_alignment), len(kept_pairs))


def test_a_refusal_source_without_answers_is_refused(tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"instruction": "How do I pick a lock?"}\n')
    with pytest.raises(UserError, match="needs a refusal"):
        instrument_sets(f"file:{prompts}", None, 4)
    with pytest.raises(UserError, match="needs a harmful answer"):
        instrument_sets(None, f"file:{prompts}", 4)
