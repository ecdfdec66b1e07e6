"""``tvaccine ... --help`` exits 0 with text for every command and sub-command of the parser.

The command lines are read from the parser ``cli.build_parser`` builds, so a new command (or a
new choice of a command's positional, such as ``data show``) is covered without editing this file.
A help text with a bare ``%`` (argparse formats help with ``%``) once made ``align --help`` crash.
"""

import argparse

import pytest

from tvaccine.cli import build_parser, main


def _command_lines(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()):
    yield prefix
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _command_lines(sub, (*prefix, name))
        elif not action.option_strings and action.choices and prefix:
            # A positional with choices is a sub-command too (``tvaccine data show --help``).
            for choice in action.choices:
                yield (*prefix, choice)


COMMAND_LINES = sorted(set(_command_lines(build_parser())))


def test_every_command_is_found():
    commands = {line[0] for line in COMMAND_LINES if line}
    assert {"align", "attack", "evaluate", "run", "report", "data", "layers", "generate"} <= commands
    assert ("data", "show") in COMMAND_LINES


@pytest.mark.parametrize("argv", COMMAND_LINES, ids=lambda line: " ".join(line) or "tvaccine")
def test_help_exits_0_with_text(argv, capsys):
    assert main([*argv, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.strip().startswith("usage: tvaccine"), out[:200]
    assert len(out.splitlines()) > 2
