"""The one exception type users see.

Every failure caused by the user's input (an unknown model, a missing file, an empty dataset, a reward that
returns NaN, a config typo) raises :class:`IrmscopeError` with a single line that says what went wrong and
what to do. The command line prints that line alone, without a traceback, and exits with status 2.
"""


class IrmscopeError(Exception):
    """A user-facing error whose message is one line: what is wrong, and what to do about it."""

    def __init__(self, message: str) -> None:
        if "\n" in message:
            raise ValueError("IrmscopeError messages must be one line")
        super().__init__(message)


def one_line(err: BaseException) -> str:
    """``err``'s message folded onto one line, to quote a library's error inside an :class:`IrmscopeError`."""
    return " ".join(str(err).split())
