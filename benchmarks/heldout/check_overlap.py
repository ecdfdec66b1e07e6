#!/usr/bin/env python
"""How close the held-out prompts come to any prompt tvaccine ships or the shared data holds.

The held-out set is only worth something if no prompt in it was trained on or evaluated
elsewhere, so every held-out prompt is compared with every built-in record (all sets and
splits, plus the bare harmful goals of scripts/build_builtin_data.py) and with the public
prompt sets in ../shared/data, by three measures:

  exact     lower-cased, whitespace-normalised equality
  jaccard   word-set overlap |A & B| / |A | B|
  ratio     difflib.SequenceMatcher ratio of the lower-cased strings

    python benchmarks/heldout/check_overlap.py [--shared ../shared/data] [--top 5]

Exits 1 when a prompt matches exactly, or reaches --max-jaccard or --max-ratio.
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
HELD_OUT = ("harmful.jsonl", "borderline.jsonl")
# A Human turn of an hh-rlhf dialogue: every one, not only the first, since red-team requests
# often come later in the conversation.
_HUMAN_TURN = re.compile(r"Human:(.*?)(?=\n\n(?:Human|Assistant):|\Z)", re.S)


def norm(text: str) -> str:
    return " ".join(text.lower().replace("\u2019", "'").split())


def words(text: str) -> frozenset[str]:
    return frozenset(re.findall(r"[a-z0-9']+", norm(text)))


def builtin_texts() -> dict[str, str]:
    """text -> where, for every instruction and input of the built-in sets and every harmful goal."""
    from tvaccine.data.builtin import _SETS, load_builtin

    out: dict[str, str] = {}
    for name in _SETS:
        for split, records in load_builtin(name).splits.items():
            for rec in records:
                for key in ("instruction", "input"):
                    if rec.get(key):
                        out.setdefault(rec[key], f"builtin:{name}@{split}")
    sys.path.insert(0, str(ROOT / "scripts"))
    import build_builtin_data as script

    for category, data in script.SAFETY.items():
        for goal, story in data["goals"]:
            out.setdefault(script.fill_goal(goal, "1"), f"build_builtin_data.py goal ({category})")
            if story:
                out.setdefault(story, f"build_builtin_data.py story ({category})")
    return out


def shared_texts(shared: Path) -> tuple[dict[str, str], list[str]]:
    """text -> where for the shared public prompt sets, and the sets that were not found."""
    from tvaccine.data.files import read_rows
    from tvaccine.data.sources import load_source

    out: dict[str, str] = {}
    missing: list[str] = []
    specs = {
        "BeaverTails 30k train unsafe": f"beavertails:{shared}/beavertails/beavertails_30k_train_unsafe_200.jsonl",
        "BeaverTails (Vaccine mixture)": f"beavertails:{shared}/beavertails/vaccine_mix_sst2_n1000_p0.2.json",
        "AdvBench": f"advbench:{shared}/advbench/harmful_behaviors.csv",
        "DecodingTrust": f"decodingtrust:{shared}/decoding_trust",
        "AlpacaEval": f"alpacaeval:{shared}/alpaca_eval/alpaca_eval.json",
    }
    for label, spec in specs.items():
        if not Path(spec.split(":", 1)[1]).exists():
            missing.append(label)
            continue
        for split, records in load_source(spec).splits.items():
            for rec in records:
                for key in ("instruction", "input"):
                    if rec.get(key):
                        out.setdefault(rec[key], f"{label} ({split})")
    hh = shared / "hh_rlhf_harmless" / "test.jsonl.gz"
    if hh.is_file():
        for _, row in read_rows(hh):
            for turn in _HUMAN_TURN.findall(row.get("chosen", "")):
                if turn.strip():
                    out.setdefault(turn.strip(), "hh-rlhf harmless-base test (Human turn)")
    else:
        missing.append("hh-rlhf")
    return out, missing


def held_out() -> list[tuple[str, str]]:
    return [(name, json.loads(line)["instruction"]) for name in HELD_OUT
            for line in (HERE / name).read_text(encoding="utf-8").splitlines() if line.strip()]


def compare(prompts: list[tuple[str, str]], refs: dict[str, str]) -> list[dict]:
    """Per held-out prompt: any exact match, and the reference with the highest Jaccard and ratio."""
    ref_items = [(norm(t), words(t), t, where) for t, where in refs.items()]
    exact = {n: (t, where) for n, _, t, where in ref_items}
    rows = []
    for file, prompt in prompts:
        low, toks = norm(prompt), words(prompt)
        by_jaccard = sorted(((len(toks & w) / len(toks | w), n, t, where) for n, w, t, where in ref_items),
                            key=lambda x: -x[0])
        best_j = by_jaccard[0][0], by_jaccard[0][2], by_jaccard[0][3]
        matcher = difflib.SequenceMatcher(autojunk=False)
        matcher.set_seq2(low)
        best_r = (0.0, "", "")
        # The closest by words give a first best ratio; then real_quick_ratio and quick_ratio, upper bounds
        # of ratio, skip every text that cannot beat it. The maximum found is exact.
        candidates = [c[1:] for c in by_jaccard[:20]] + [(n, t, where) for n, _, t, where in ref_items]
        for n, t, where in candidates:
            matcher.set_seq1(n)
            if matcher.real_quick_ratio() > best_r[0] and matcher.quick_ratio() > best_r[0]:
                r = matcher.ratio()
                if r > best_r[0]:
                    best_r = (r, t, where)
        rows.append({"file": file, "prompt": prompt, "exact": exact.get(low), "jaccard": best_j, "ratio": best_r})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--top", type=int, default=5, help="closest pairs shown per measure")
    ap.add_argument("--max-jaccard", type=float, default=0.5)
    ap.add_argument("--max-ratio", type=float, default=0.8)
    args = ap.parse_args(argv)
    prompts = held_out()
    groups = {"built-in": builtin_texts()}
    groups["shared"], missing = shared_texts(args.shared)
    if missing:
        print(f"not found under {args.shared}: {', '.join(missing)}")
    failed = False
    for group, refs in groups.items():
        rows = compare(prompts, refs)
        print(f"\n## {len(prompts)} held-out prompts against {len(refs)} {group} texts")
        hits = [r for r in rows if r["exact"]]
        print(f"exact (lower-cased) matches: {len(hits)}")
        for r in hits:
            print(f"  {r['prompt']!r} == {r['exact'][1]}")
        for measure, limit in (("jaccard", args.max_jaccard), ("ratio", args.max_ratio)):
            rows.sort(key=lambda r: -r[measure][0])
            print(f"highest {measure}: {rows[0][measure][0]:.3f} (limit {limit})")
            for r in rows[:args.top]:
                score, text, where = r[measure]
                print(f"  {score:.3f}  {r['prompt']!r}\n         ~ {text!r} [{where}]")
            failed |= rows[0][measure][0] >= limit
        failed |= bool(hits)
    print("\nFAIL: a held-out prompt is too close to a known one" if failed else "\nOK: no near copies")
    return int(failed)


if __name__ == "__main__":
    sys.exit(main())
