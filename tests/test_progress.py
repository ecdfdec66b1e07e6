"""Scoring the model during the attack (the HS curve) and the robustness summary of a curve."""

import json

import pytest
from transformers import TrainerCallback

from test_resume import assert_same_adapter
from tvaccine.attack import AttackSpec, load_aligned, run_attack
from tvaccine.cli import main
from tvaccine.errors import UserError
from tvaccine.evaluation.evaluate import EvalSpec, evaluate
from tvaccine.evaluation.progress import ProgressSpec, read_curve
from tvaccine.evaluation.robustness import hs_auc, steps_to_reach, summarize
from tvaccine.results_io import read_jsonl

EVAL = EvalSpec(task="builtin:sentiment", n_harmful=5, n_task=3, n_borderline=2, max_new_tokens_harmful=6,
                max_new_tokens_task=3, batch_size=8)


def attack_spec(save_steps=None, **changes):
    train = dict(max_steps=5, per_device_train_batch_size=5, learning_rate=5e-3, use_cpu=True)
    if save_steps:
        train["save_steps"] = save_steps
    values = dict(model="tiny-random-llama", n=20, p=0.5, max_length=512, lora_dropout=0.1, seed=1, train=train)
    return AttackSpec(**{**values, **changes})


def test_curve_has_every_kth_step_and_the_last_and_does_not_change_the_attack(tmp_path):
    quiet = dict(log=lambda *a: None)
    run_attack(attack_spec(), tmp_path / "plain", **quiet)
    _, _, summary = run_attack(attack_spec(eval_every=2, progress_eval=EVAL, progress_generate="every"),
                               tmp_path / "curve", **quiet)
    curve = read_curve(tmp_path / "curve")
    assert [p["step"] for p in curve] == [0, 2, 4, 5]
    for point in curve:
        assert 0 <= point["harmful_score"] <= 100 and 0 <= point["over_refusal"] <= 100
        assert point["finetune_accuracy"] is not None
        folder = tmp_path / "curve" / "progress" / f"step_{point['step']:05d}"
        # Each point is its step's own evaluation: the judge's verdicts on that step's answers.
        verdicts = read_jsonl(folder / "verdicts_harmful.jsonl")
        assert point["harmful_score"] == pytest.approx(100.0 * sum(v["harmful"] for v in verdicts) / len(verdicts))
        shares = {k: point[f"{k}_share"] for k in ("refused", "complied", "empty", "degenerate")}
        assert sum(shares.values()) == pytest.approx(100.0) and shares["complied"] == point["harmful_score"]
        assert shares == pytest.approx({k: 100.0 * sum(v["verdict"] == k for v in verdicts) / len(verdicts)
                                        for k in shares})
        assert len(read_jsonl(folder / "generations_harmful.jsonl")) == 5
        assert len(read_jsonl(folder / "generations_task.jsonl")) == 3
    # Greedy generation in between steps leaves the RNG and the weights alone: same adapter, bit for bit
    # (dropout is on, so a consumed random number would show).
    assert_same_adapter(tmp_path / "plain", tmp_path / "curve")
    assert summary["steps"] == 5


def test_by_default_answers_are_generated_at_the_ends_and_forward_metrics_at_every_point(tmp_path):
    _, _, _ = run_attack(attack_spec(eval_every=2, progress_eval=EVAL), tmp_path / "a", log=lambda *a: None)
    curve = read_curve(tmp_path / "a")
    assert [p["step"] for p in curve] == [0, 2, 4, 5]
    generated = [p["step"] for p in curve if p["harmful_score"] is not None]
    assert generated == [0, 5]
    for point in curve:
        folder = tmp_path / "a" / "progress" / f"step_{point['step']:05d}"
        assert (folder / "generations_harmful.jsonl").is_file() == (point["step"] in generated)
        assert point["alignment_loss"] > 0 and point["drift"] >= 0
        scores = json.loads((folder / "scores.json").read_text())
        assert len(read_jsonl(folder / "forward_alignment.jsonl")) == scores["n_alignment"] > 0
    # Before the first step the attack's fresh LoRA is zero: the model is the aligned one, no drift.
    assert curve[0]["drift"] == pytest.approx(0.0, abs=1e-8)
    assert curve[-1]["drift"] > 0


def test_run_attack_can_leave_the_last_answers_to_the_evaluation_after_it(tmp_path):
    from tvaccine.evaluation.progress import fill_last_point
    from tvaccine.models import merge_adapter

    spec = attack_spec(eval_every=5, progress_eval=EVAL)
    model, tokenizer, _ = run_attack(spec, tmp_path / "a", log=lambda *a: None, generate_last=False)
    assert read_curve(tmp_path / "a")[-1]["harmful_score"] is None
    final = EvalSpec(**{**EVAL.__dict__, "n_harmful": 8, "n_task": 5})
    evaluate(merge_adapter(model), tokenizer, final, tmp_path / "eval")
    fill_last_point(tmp_path / "a" / "progress", tmp_path / "eval", spec.progress_eval)
    last = read_curve(tmp_path / "a")[-1]
    rows = read_jsonl(tmp_path / "a" / "progress" / "step_00005" / "generations_harmful.jsonl")
    assert rows == read_jsonl(tmp_path / "eval" / "generations_harmful.jsonl")[:5]
    verdicts = read_jsonl(tmp_path / "a" / "progress" / "step_00005" / "verdicts_harmful.jsonl")
    assert last["harmful_score"] == pytest.approx(100.0 * sum(v["harmful"] for v in verdicts) / 5)
    assert last["alignment_loss"] is not None


def test_curve_endpoints_are_the_models_before_and_after_the_attack(tmp_path):
    spec = attack_spec(eval_every=5, progress_eval=EVAL)
    model, tokenizer, _ = run_attack(spec, tmp_path / "a", log=lambda *a: None)
    evaluate(model, tokenizer, EVAL, tmp_path / "after")
    before_model, before_tokenizer = load_aligned(spec)
    evaluate(before_model, before_tokenizer, EVAL, tmp_path / "before")
    for step, standalone in ((0, "before"), (5, "after")):
        for name in ("harmful", "task", "borderline"):
            curve_answers = read_jsonl(tmp_path / "a" / "progress" / f"step_{step:05d}" / f"generations_{name}.jsonl")
            assert curve_answers == read_jsonl(tmp_path / standalone / f"generations_{name}.jsonl")
    # The attack moved the model: at lr 5e-3 the tiny model's answers change.
    first = read_jsonl(tmp_path / "a" / "progress" / "step_00000" / "generations_harmful.jsonl")
    last = read_jsonl(tmp_path / "a" / "progress" / "step_00005" / "generations_harmful.jsonl")
    assert [r["generation"] for r in first] != [r["generation"] for r in last]


class InterruptAt(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 3:
            raise KeyboardInterrupt


def test_resumed_attack_continues_the_curve_without_repeating_points(tmp_path):
    spec = attack_spec(eval_every=2, progress_eval=EVAL, save_steps=2)
    with pytest.raises(KeyboardInterrupt):
        run_attack(spec, tmp_path / "a", log=lambda *a: None, callbacks=[InterruptAt()])
    run_attack(spec, tmp_path / "a", resume=True, log=lambda *a: None)
    assert [p["step"] for p in read_curve(tmp_path / "a")] == [0, 2, 4, 5]


def test_robustness_summary_numbers():
    curve = [{"step": 0, "harmful_score": 20.0}, {"step": 10, "harmful_score": 40.0},
             {"step": 20, "harmful_score": 80.0}]
    # Trapezoids: 10 * 30 + 10 * 60 = 900 over 20 steps.
    assert hs_auc(curve) == pytest.approx(45.0)
    assert steps_to_reach(curve, 50.0) == pytest.approx(12.5)
    assert steps_to_reach(curve, 90.0) is None
    assert steps_to_reach(curve, 10.0) == 0.0
    summary = summarize(list(reversed(curve)))  # order on file does not matter
    assert summary["hs_rise"] == pytest.approx(60.0) and summary["hs_start"] == 20.0
    assert summary["curve_steps"] == 20
    # A curve that stays flat is as robust as its level.
    assert hs_auc([{"step": 0, "harmful_score": 30.0}, {"step": 5, "harmful_score": 30.0}]) == pytest.approx(30.0)


def test_progress_spec_takes_the_first_prompts_of_each_set():
    spec = ProgressSpec(every=3, n_harmful=7, n_task=0, n_borderline=2).eval_spec(EVAL)
    assert (spec.n_harmful, spec.task, spec.n_borderline, spec.judge) == (7, None, 2, EVAL.judge)
    with pytest.raises(UserError, match="n_harmful must be >= 1"):
        ProgressSpec(n_harmful=0)


@pytest.mark.parametrize("args, message", [
    (["--progress-every", "0"], "every must be >= 1"),
    (["--progress-every", "2", "--progress-n-harmful", "0"], "n_harmful must be >= 1"),
    (["--progress-every", "2", "--progress-n-task", "-1"], "n_task must be >= 0"),
    (["--judge", "refusal"], "--judge sets the progress evaluation, which needs --progress-every"),
])
def test_attack_progress_bad_input_is_one_line_exit_2(tmp_path, capsys, args, message):
    code = main(["attack", "--model", "tiny-random-llama", "--out", str(tmp_path / "x"), "--n", "10",
                 "--max-steps", "1", *args])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and err[0].startswith("tvaccine: error:")
    assert list(tmp_path.iterdir()) == []
