"""Errors a user can act on.

Anything raised as :class:`UserError` is printed by the CLI as one line (no traceback) and exits with
code 2. The message must name the file, row or key at fault and say what is allowed.
"""


class UserError(Exception):
    """Bad input from the user: a task, model, file, config key or data row that cannot be used."""


class ServerError(Exception):
    """A model server answered with an error, or could not be reached after every retry.

    The CLI prints it as one line (exit code 3) and says that the run can be resumed: finished examples are
    already on disk.
    """

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status
