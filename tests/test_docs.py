"""The documentation works in a fresh clone: every relative link in README.md and docs/ points to a
file git tracks and does not ignore, every `tvaccine` command shown parses, and the README stays a
front page. An unanchored `results/` rule once ignored docs/results/, and every result link broke."""

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_README_LINES = 170

_FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.MULTILINE | re.DOTALL)
_INLINE_CODE = re.compile(r"`[^`\n]*`")
_INLINE_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+[\"'][^\"']*[\"'])?\s*\)")
_REFERENCE_LINK = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.MULTILINE)
_HTML_LINK = re.compile(r"""<(?:a|img)\b[^>]*?\b(?:href|src)\s*=\s*["']([^"']+)["']""", re.IGNORECASE)
_EXTERNAL = re.compile(r"^(?:[a-z][a-z0-9+.-]*:|//|#)", re.IGNORECASE)


def _git(root: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(root), *args], input=stdin, capture_output=True, text=True, check=False)


def _checkout_root() -> Path:
    """The repository root, or a skip: outside a git checkout (an sdist, a copied tree) nothing is tracked."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed, so tracked files cannot be listed")
    top = _git(ROOT, "rev-parse", "--show-toplevel")
    if top.returncode != 0 or Path(top.stdout.strip()).resolve() != ROOT:
        pytest.skip(f"{ROOT} is not the root of a git checkout, so tracked files cannot be listed")
    return ROOT


def _pages(root: Path) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").rglob("*.md"))]


def relative_links(markdown: str) -> list[str]:
    """Link targets that point into the repository: inline, reference-style and HTML links, outside code."""
    prose = _INLINE_CODE.sub("", _FENCE.sub("", markdown))
    targets = [m.group(1) for pattern in (_INLINE_LINK, _REFERENCE_LINK, _HTML_LINK) for m in pattern.finditer(prose)]
    return [t for t in targets if not _EXTERNAL.match(t)]


def broken_links(root: Path, pages: list[Path]) -> list[str]:
    """One line per link whose target a fresh clone of ``root`` would not have."""
    root = root.resolve()
    tracked = set(_git(root, "ls-files", "-z").stdout.split("\0")) - {""}
    problems, checked = [], {}
    for page in pages:
        for link in relative_links(page.read_text(encoding="utf-8")):
            path = link.split("#", 1)[0].split("?", 1)[0]
            target = (page.resolve().parent / path).resolve()
            where = f"{page.resolve().relative_to(root)}: {link}"
            if not target.is_relative_to(root):
                problems.append(f"{where} points outside the repository")
                continue
            rel = target.relative_to(root).as_posix()
            under = sorted(t for t in tracked if t == rel or t.startswith(rel + "/") or rel == ".")
            if not under:
                problems.append(f"{where} is not tracked by git")
                continue
            checked[where] = under
    files = sorted({f for under in checked.values() for f in under})
    # --no-index also applies the rules to tracked files: a force-added file under an ignored
    # directory is tracked here but still missing from anything built from the ignore rules.
    out = _git(root, "check-ignore", "--no-index", "--stdin", "-z", stdin="\0".join(files) + "\0").stdout
    ignored = set(out.split("\0")) - {""}
    for where, under in checked.items():
        hits = [f for f in under if f in ignored]
        if hits:
            problems.append(f"{where} is git-ignored ({hits[0]})")
    return problems


def shown_commands(markdown: str) -> list[list[str]]:
    """The arguments of every `tvaccine ...` (or `... -m tvaccine ...`) line in the shell code blocks."""
    commands = []
    for block in re.findall(r"^```(?:bash|sh|shell|console)[ \t]*\n(.*?)^```", markdown, re.MULTILINE | re.DOTALL):
        for line in block.replace("\\\n", " ").splitlines():
            tokens = shlex.split(line, comments=True)
            for i, token in enumerate(tokens):
                if token == "tvaccine" and (i == 0 or tokens[i - 1] == "-m"):
                    commands.append(tokens[i + 1:])
                    break
    return commands


def test_every_relative_link_is_tracked_and_not_ignored():
    root = _checkout_root()
    assert broken_links(root, _pages(root)) == []


def test_the_readme_is_a_front_page():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= MAX_README_LINES, f"README.md has {lines} lines; move detail into docs/"


@pytest.mark.parametrize("page", ["README.md", *sorted(p.name for p in (ROOT / "docs").glob("*.md"))])
def test_every_command_shown_parses(page):
    """Result pages (docs/results/) are left out: they quote the commands of past commits as run."""
    from tvaccine.cli import build_parser

    path = ROOT / page if page == "README.md" else ROOT / "docs" / page
    for argv in shown_commands(path.read_text(encoding="utf-8")):
        try:
            build_parser().parse_args(argv)
        except SystemExit:
            pytest.fail(f"{page}: `tvaccine {shlex.join(argv)}` does not parse")


def test_the_checker_finds_untracked_ignored_and_outside_targets(tmp_path):
    """The checker itself, on a scratch repository with the bug that broke the result links."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    _git(tmp_path, "init", "-q")
    (tmp_path / ".gitignore").write_text("results/\n")
    (tmp_path / "docs" / "results").mkdir(parents=True)
    for name in ("docs/ok.md", "docs/results/lost.md", "docs/untracked.md"):
        (tmp_path / name).write_text("x\n")
    _git(tmp_path, "add", ".gitignore", "docs/ok.md")
    _git(tmp_path, "add", "-f", "docs/results/lost.md")
    readme = tmp_path / "README.md"
    readme.write_text("[a](docs/ok.md#top) [b](docs/results/lost.md) [c](docs/untracked.md) [d](../x.md)\n"
                      "[e](https://example.org) [f](#layout) ![g](docs/) `[h](nowhere.md)`\n"
                      "```\n[i](nowhere.md)\n```\n")
    assert broken_links(tmp_path, [readme]) == [
        "README.md: docs/untracked.md is not tracked by git",
        "README.md: ../x.md points outside the repository",
        "README.md: docs/results/lost.md is git-ignored (docs/results/lost.md)",
        "README.md: docs/ is git-ignored (docs/results/lost.md)",
    ]
    (tmp_path / ".gitignore").write_text("/results/\n")
    assert broken_links(tmp_path, [readme]) == ["README.md: docs/untracked.md is not tracked by git",
                                                "README.md: ../x.md points outside the repository"]


def test_shown_commands_are_found_in_shell_blocks_only():
    markdown = ("`tvaccine nope`\n```\ntvaccine layout\n```\n```bash\ntvaccine run --preset cpu   # comment\n"
                "torchrun --nproc_per_node 2 -m tvaccine align \\\n    --out runs/x\npip install tvaccine\n```\n")
    assert shown_commands(markdown) == [["run", "--preset", "cpu"], ["align", "--out", "runs/x"]]


def test_the_layout_names_every_module():
    page = (ROOT / "docs" / "contributing.md").read_text(encoding="utf-8")
    layout = page.split("## Layout", 1)[-1].split("\n## ", 1)[0]
    modules = sorted({p.name for p in (ROOT / "src" / "tvaccine").rglob("*.py")})
    assert [m for m in modules if m not in layout] == []


def test_the_first_screen_has_install_quick_start_gpu_command_and_python():
    """The first 40 lines: the pitch, install with the torch index for CPU and CUDA, the quick start, the
    papers' setting on a GPU and a whole Python example."""
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    first = "\n".join(lines[:40])
    for needed in ("**Status:**", "download.pytorch.org/whl/cpu", "/whl/cu", "pip install tvaccine",
                   "tvaccine run --preset smoke", "tvaccine align", "tvaccine attack", "tvaccine evaluate",
                   "tvaccine run --preset paper", "GB", "TVaccineTrainer("):
        assert needed in first, f"{needed!r} is not in the README's first 40 lines"
    start = lines.index("```python")
    assert lines.index("```", start) < 40, "the Python example must end by line 40"


def test_no_page_names_an_internal_issue_or_a_path_outside_the_repository():
    """The written pages; the files a run wrote (model cards, reports in result folders) are records."""
    pattern = re.compile(r"\bissues? #?\d+|calibration notes|\.\./shared|/work/", re.IGNORECASE)
    results = ROOT / "docs" / "results"
    written = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted(results.glob("*.md")),
               *sorted((results / "archive").glob("*.md"))]
    hits = [f"{page.relative_to(ROOT)}:{number}: {line.strip()}" for page in written
            for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1) if pattern.search(line)]
    assert hits == []
