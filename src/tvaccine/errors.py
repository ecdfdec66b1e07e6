"""One exception type for everything the user can fix; the CLI turns it into one line and exit code 2."""


class UserError(Exception):
    """Bad input: a path, a field, a number out of range. Raised before any long work starts."""
