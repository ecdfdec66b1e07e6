"""The exceptions the CLI turns into one line: bad input (exit code 2) and Ctrl-C (exit code 130)."""


class UserError(Exception):
    """Bad input: a path, a field, a number out of range. Raised before any long work starts."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, with what was kept and what the user can do next (resume, or start over)."""

    def __init__(self, hint: str):
        super().__init__(hint)
        self.hint = hint
