"""Result files read back with clear errors, seed statistics, and plots a reader can tell apart."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from tvaccine import report
from tvaccine.errors import UserError
from tvaccine.layer_report import outlier_limit, plot_layer_bars, plot_layer_history
from tvaccine.results_io import read_jsonl, write_jsonl, write_text

SRC = Path(__file__).resolve().parents[1] / "src"


# ---------------------------------------------------------------- reading result files

def test_a_damaged_jsonl_names_the_file_and_the_line(tmp_path):
    path = tmp_path / "generations_harmful.jsonl"
    path.write_text('{"instruction": "a", "generation": "b"}\n\n{"instruction": "c", "generati')
    with pytest.raises(UserError, match=re.escape(f"{path}: line 3 is not valid JSON")):
        read_jsonl(path)
    path.write_text('{"a": 1}\n[1, 2]\n')
    with pytest.raises(UserError, match=re.escape(f"{path}: line 2 holds a list, expected a JSON object")):
        read_jsonl(path)


def test_an_empty_or_missing_jsonl_is_refused(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text("\n \n")
    with pytest.raises(UserError, match=re.escape(f"{path}: the file is empty")):
        read_jsonl(path)
    with pytest.raises(UserError, match="no such file"):
        read_jsonl(tmp_path / "missing.jsonl")
    path.write_bytes(b"\xff\xfe{}")
    with pytest.raises(UserError, match="cannot read"):
        read_jsonl(path)


def test_rows_round_trip_and_unwritable_paths_are_one_line(tmp_path):
    rows = [{"method": "sft", "setting": "p0.1"}, {"method": "none", "setting": "p0.1"}]
    write_jsonl(tmp_path / "r.jsonl", rows)
    assert read_jsonl(tmp_path / "r.jsonl") == rows
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match=re.escape(f"cannot write {tmp_path / 'file' / 'r.jsonl'}")):
        write_text(tmp_path / "file" / "r.jsonl", "x")


def test_report_refuses_rows_that_are_not_results(tmp_path):
    with pytest.raises(UserError, match="line 2 has no method or setting"):
        report.write_report(tmp_path, [{"method": "sft", "setting": "a"}, {"hs": 3}])
    with pytest.raises(UserError, match="no results to report"):
        report.write_report(tmp_path, [])
    assert not (tmp_path / "report.md").exists()


# ---------------------------------------------------------------- seeds

def test_mean_interval_is_the_t_interval_of_the_mean():
    mean, low, high = report.mean_interval([1.0, 2.0, 3.0])
    half = 4.303 * 1.0 / math.sqrt(3)  # t(0.975, 2) * sd / sqrt(n)
    assert mean == 2.0 and low == pytest.approx(2 - half) and high == pytest.approx(2 + half)
    assert report.mean_interval([5.0]) == (5.0, 5.0, 5.0)
    assert report.mean_interval([1.0, 3.0] * 40)[2] == pytest.approx(2 + 1.9913 * math.sqrt(80 / 79) / math.sqrt(80),
                                                                     abs=0.003)


def seeded_rows() -> list[dict]:
    """Three seeds of SFT and Vaccine, whose curves differ by seed; Non-aligned once."""
    rows = []
    for seed, shift in ((42, 0.0), (43, 10.0), (44, 20.0)):
        for method, level in (("sft", 40.0), ("vaccine", 20.0)):
            curve = [{"step": s, "harmful_score": level + shift + s, "finetune_accuracy": 50.0} for s in (0, 2, 4)]
            rows.append({"method": method, "setting": "p0.1", "seed": seed, "curve": curve, "hs_auc": level + shift,
                         "before_harmful_score": level, "after_harmful_score": level + shift + 4, "p": 0.1})
    rows.append({"method": "none", "setting": "p0.1", "seed": 42, "hs_auc": 90.0, "after_harmful_score": 95.0,
                 "curve": [{"step": s, "harmful_score": 90.0} for s in (0, 2, 4)], "p": 0.1})
    return rows


def test_tables_give_mean_and_sd_over_seeds():
    rows = seeded_rows()
    table = report.markdown_table(rows)
    assert "| SFT | 40.0 ± 0.0 | – | 54.0 ± 10.0 |" in table
    assert "| Non-aligned | – | – | 95.0 |" in table
    seeds = report.seed_table(rows)
    half = 4.303 * 10 / math.sqrt(3)
    assert f"| SFT | p0.1 | 3 | 50.0 [{50 - half:.1f}, {50 + half:.1f}] |" in seeds
    assert "Non-aligned" not in seeds  # one seed: no interval to give
    assert "| Vaccine | p0.1 | 30.0 ± 10.0 |" in report.robustness_table(rows)


@pytest.fixture
def figures(monkeypatch):
    """The figures the plotting code closes, kept open for inspection."""
    plt = report.pyplot()
    kept = []
    monkeypatch.setattr(plt, "close", kept.append)
    yield kept
    monkeypatch.undo()
    for fig in kept:
        plt.close(fig)


def test_curves_draw_the_seed_mean_with_its_band_and_tell_methods_apart(tmp_path, figures):
    rows = seeded_rows()
    path = report._plot_curves(report.pyplot(), rows, tmp_path)
    assert path.stat().st_size > 0
    fig = figures[-1]
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    sft = lines["SFT (mean of 3 seeds)"]
    assert list(sft.get_ydata()) == [50.0, 52.0, 54.0]  # the mean over seeds at each step
    band = ax.collections[0].get_paths()[0].vertices[:, 1]
    half = 4.303 * 10 / math.sqrt(3)
    assert min(band) == pytest.approx(50 - half) and max(band) == pytest.approx(54 + half)
    styles = [(line.get_marker(), line.get_linestyle(), line.get_color()) for line in lines.values()]
    for i in range(3):
        assert len({style[i] for style in styles}) == 3  # marker, line style and colour all differ
    assert all(float(t).is_integer() for t in ax.get_xticks())
    legend = fig.legends[0]
    assert legend.get_texts()[0].get_fontsize() >= 9
    assert {t.get_text() for t in legend.get_texts()} == {"SFT (mean of 3 seeds)", "Vaccine (mean of 3 seeds)",
                                                          "Non-aligned"}


def test_the_layer_chart_keeps_small_layers_readable(tmp_path, figures):
    probabilities = [0.5] + [0.5 / 29 + 0.001 * (i % 3) for i in range(29)]
    top = outlier_limit(probabilities)
    assert top is not None and top < 0.05
    assert outlier_limit([0.2, 0.25, 0.3, 0.25]) is None  # nothing dwarfs the rest: plain axis
    plot_layer_bars(probabilities, tmp_path / "bars.png", "probe")
    ax = figures[-1].axes[0]
    assert ax.get_ylim()[1] == pytest.approx(top)
    assert [t.get_text() for t in ax.texts] == ["0.50\u2191"]
    history = [{"event": "probe", "step": s, "probabilities": probabilities} for s in (0, 10, 20)]
    history += [{"event": "draw", "selected": [0, i]} for i in range(1, 30)]  # layer 0 in every draw
    plot_layer_history(history, tmp_path / "history.png", "T-Vaccine")
    ax = figures[-1].axes[0]
    assert sorted(t.get_text() for t in ax.texts) == ["drawn 0.50\u2191", "p 0.50\u2191"]
    legend = ax.get_legend()
    assert sorted(t.get_text() for t in legend.get_texts()) == ["p_l at step 0", "p_l at step 20",
                                                                "share of the drawn layers"]
    assert legend.get_texts()[0].get_fontsize() >= 9


def test_matplotlib_is_set_up_in_one_place():
    users = [p.relative_to(SRC).as_posix() for p in SRC.rglob("*.py") if "matplotlib.use(" in p.read_text()]
    assert users == ["tvaccine/plots.py"]


def test_the_four_answer_shares_are_tabled_and_drawn(tmp_path, figures):
    rows = seeded_rows()
    for row in rows:
        for point in row["curve"]:
            hs = point["harmful_score"]
            point.update(complied_share=hs, refused_share=100 - hs - 10, empty_share=4.0, degenerate_share=6.0)
    table = report.answers_table(rows)
    # SFT at step 0 over seeds 42-44: refused 50, 40, 30; complied 40, 50, 60.
    assert "| SFT | p0.1 | 40.0 ± 10.0 / 50.0 ± 10.0 / 4.0 ± 0.0 / 6.0 ± 0.0 |" in table
    assert "| Non-aligned | p0.1 | 0.0 / 90.0 / 4.0 / 6.0 | 0.0 / 90.0 / 4.0 / 6.0 | – / – / – / – | – |" in table
    # The evaluation after the attack, on all prompts, when a row has it.
    rows[-1].update(after_refused_share=1.0, after_complied_share=95.0, after_empty_share=0.0,
                    after_degenerate_share=4.0, after_harmful_cut_by_token_limit=3)
    assert "| 1.0 / 95.0 / 0.0 / 4.0 | 3 |" in report.answers_table(rows)
    path = report._plot_answers(report.pyplot(), rows, tmp_path)
    assert path.name == "answers_vs_steps.png" and path.stat().st_size > 0
    assert report.answers_table([{"method": "sft", "setting": "p0.1", "curve": [{"step": 0, "harmful_score": 1.0}]}]) \
        == ""


def test_the_forward_metrics_are_tabled_and_drawn(tmp_path, figures):
    rows = [{"method": "sft", "setting": "p0.1", "seed": seed, "rp_auc": rp,
             "curve": [{"step": 0, "alignment_loss": 2.0, "harmful_loss": 3.0, "refusal_preference": rp, "drift": 0.0},
                       {"step": 5, "alignment_loss": 2.5, "harmful_loss": 2.0, "refusal_preference": rp - 20,
                        "drift": drift}]}
            for seed, rp, drift in ((42, 60.0, 10.0), (43, 80.0, 30.0))]
    table = report.forward_table(rows)
    # Seeds 42 and 43: preference 60 -> 40 and 80 -> 60 (mean 70 -> 50, sd 14.1); drift 10 and 30 (20 ± 14.14).
    assert ("| SFT | p0.1 | 2.000 ± 0.000 → 2.500 ± 0.000 | 3.000 ± 0.000 → 2.000 ± 0.000 | "
            "70.0 ± 14.1 → 50.0 ± 14.1 | 20.00 ± 14.14 | 70.0 ± 14.1 |") in table
    path = report._plot_forward(report.pyplot(), rows, tmp_path)
    assert path.name == "forward_vs_steps.png" and path.stat().st_size > 0
    assert report.forward_table([{"method": "sft", "setting": "p0.1", "curve": [{"step": 0, "harmful_score": 1.0}]}]) \
        == "" and report._plot_forward(report.pyplot(), [{"method": "sft", "setting": "p0.1", "curve": [
            {"step": 0, "harmful_score": 1.0}]}], tmp_path) is None
