"""The exceptions the CLI turns into one line: bad input (exit code 2) and Ctrl-C (exit code 130)."""


class UserError(Exception):
    """Bad input: a path, a field, a number out of range. Raised before any long work starts.

    ```python
    from tvaccine import UserError, load_source

    try:
        load_source("file:missing.jsonl")
    except UserError as error:
        print(f"tvaccine: error: {error}")  # what the command line prints, with exit code 2
    ```
    """


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, with what was kept and what the user can do next (resume, or start over)."""

    def __init__(self, hint: str):
        super().__init__(hint)
        self.hint = hint
