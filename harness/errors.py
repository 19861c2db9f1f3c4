"""The one exception type a user can meet: its message says what is wrong and what to do."""


class UserError(Exception):
    """Bad input or a missing prerequisite; bench.py prints the message, never a traceback."""
