"""The exception types a user can meet: each message says, in one sentence, what is wrong and what to do."""


class UserError(Exception):
    """Bad input or a missing prerequisite; bench.py prints the message, never a traceback, and exits 2."""

    exit_code = 2


class StoppedError(UserError):
    """The run could not go on (a full disk, a read-only folder): what finished is kept; bench.py exits 1."""

    exit_code = 1
