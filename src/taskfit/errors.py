"""Errors a user can act on.

Anything raised as :class:`UserError` is printed by the CLI as one line (no traceback) and exits with
code 2. The message must name the file, row or key at fault and say what is allowed.
"""


class UserError(Exception):
    """Bad input from the user: a task, model, file, config key or data row that cannot be used."""
