"""Every ```python block of README.md and docs/*.md runs, so the examples cannot rot.

A page's blocks run in order in one namespace and one scratch folder, as a reader would paste
them. The models they name are swapped for a tiny random Llama with a chat template, and the data
mirror is a tiny one in the real layouts, so a page takes seconds and needs no download. Methods a
page registers are forgotten after it."""

import importlib.util
import re
from pathlib import Path

import pytest

import tvaccine.methods
from tiny_mirror import write_tiny_mirror
from tiny_models import tiny_chat_model_dir

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"^```python[ \t]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
# The model names the pages use, each swapped for the tiny chat model.
MODEL_NAMES = ("HuggingFaceTB/SmolLM2-135M-Instruct", "smollm2-135m-instruct")
PAGES = ["README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))]


def python_blocks(markdown: str) -> list[str]:
    return BLOCK.findall(markdown)


@pytest.fixture(scope="module")
def tiny_chat_model(tmp_path_factory):
    return tiny_chat_model_dir(tmp_path_factory.mktemp("models") / "tiny-chat")


def test_the_python_page_has_its_three_scripts():
    blocks = python_blocks((ROOT / "docs" / "python.md").read_text(encoding="utf-8"))
    assert len(blocks) == 3 and "TVaccineTrainer(" in blocks[0] and "run_attack(" in blocks[1]
    assert "@register_method(" in blocks[2] and "run_alignment(" in blocks[2]


def test_blocks_are_found_only_in_python_fences():
    markdown = "```python\na = 1\n```\n```bash\nb = 2\n```\n```\nc = 3\n```\n```python\nd = 4\n```\n"
    assert python_blocks(markdown) == ["a = 1\n", "d = 4\n"]


@pytest.mark.parametrize("page", PAGES)
def test_every_python_block_runs(page, tiny_chat_model, tmp_path, monkeypatch):
    blocks = python_blocks((ROOT / page).read_text(encoding="utf-8"))
    if not blocks:
        pytest.skip(f"{page} has no Python block")
    write_tiny_mirror(tmp_path / "data")
    monkeypatch.setenv("TVACCINE_DATA", str(tmp_path / "data" / "mirror"))
    monkeypatch.setattr(tvaccine.methods, "_REGISTRY", dict(tvaccine.methods._REGISTRY))
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__doc_example__"}
    for number, code in enumerate(blocks, 1):
        for name in MODEL_NAMES:
            code = code.replace(f'"{name}"', f'"{tiny_chat_model}"')
        if importlib.util.find_spec("tensorboard") is None:  # the optional extra; the rest still runs
            code = code.replace('report_to="tensorboard"', 'report_to="none"')
        exec(compile(code, f"{page}, Python block {number}", "exec"), namespace)
