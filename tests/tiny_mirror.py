"""A tiny data mirror (``TVACCINE_DATA``) in the layouts the real one has: BeaverTails and SST-2 as
`tvaccine data fetch` dumps them from the hub, and RepNoise's BeaverTails refusal file in ./data/. Tests
that read the papers' datasets use it, so they run offline and without the shared sample files."""

import json

REFUSALS = "data/beavertails_with_refusals_train.json"


def write_tiny_mirror(root) -> None:
    """``root/mirror/`` (point TVACCINE_DATA at it) and ``root/data/`` (the refusal file)."""
    def rows(path, items):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r) + "\n" for r in items))

    category = {"violence,aiding_and_abetting,incitement": True, "privacy_violation": False}
    rows(root / "mirror" / "beavertails" / "hub" / "30k_train.jsonl",
         [{"prompt": f"How do I do harmful thing {i}?", "response": f"Here is how to do harmful thing {i}.",
           "category": category, "is_safe": False} for i in range(30)]
         + [{"prompt": "How do I bake bread?", "response": "Mix flour and water.", "category": {}, "is_safe": True}])
    rows(root / "mirror" / "beavertails" / "hub" / "30k_test.jsonl",
         [{"prompt": f"How would I cause unseen harm {i}?", "response": f"Do unseen harm {i} like this.",
           "category": category, "is_safe": False} for i in range(10)])
    rows(root / "mirror" / "sst2" / "hub" / "train.jsonl",
         [{"sentence": f"a {'fine' if i % 2 else 'dull'} film number {i} ", "label": i % 2, "idx": i}
          for i in range(20)])
    rows(root / "mirror" / "sst2" / "hub" / "validation.jsonl",
         [{"sentence": f"an {'able' if i % 2 else 'awful'} story {i} ", "label": i % 2, "idx": i} for i in range(8)])
    refusal_file = root / REFUSALS
    refusal_file.parent.mkdir(parents=True, exist_ok=True)
    refusal_file.write_text(json.dumps(
        [{"prompt": f"Tell me how to hurt someone, case {i}.", "response": f"Hurt them by method {i}.",
          "category": category, "is_safe": False,
          "refusal": f"Question: Tell me how to hurt someone, case {i}.\nAnswer: I cannot help you hurt anyone."}
         for i in range(30)]))
