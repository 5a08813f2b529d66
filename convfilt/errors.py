"""The library's errors: Python's own types, so ``except ValueError`` catches a bad argument.

- ``ConvfiltError``: a runtime failure (unreadable image, no match above the threshold, ...);
  the command line exits 1.
- ``UsageError``: a bad parameter value or an impossible request (a probe larger than the
  scene); also a ``ValueError``. The command line exits 2.
- A value of the wrong type raises the built-in ``TypeError``.

Messages name Python parameters (``top``, ``sigma``, ``kernel``), never command-line flags.
``parameters`` lists the parameter names a message mentions, so that the command line, and
only it, can show them as its flags (``cli.flag_message``).
"""

from __future__ import annotations

from collections.abc import Iterable


class ConvfiltError(Exception):
    """A runtime failure: unreadable image, no match above the threshold, ... (exit 1).

    Parameters
    ----------
    message : str
        One line, naming the file or parameter at fault.
    parameters : iterable of str, optional
        The Python parameter names the message mentions (as words, or as ``name=True``).
    """

    exit_code = 1

    def __init__(self, message: str, *, parameters: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.parameters: tuple[str, ...] = tuple(parameters)


class UsageError(ConvfiltError, ValueError):
    """A bad parameter value or an impossible request, e.g. a probe larger than the scene.

    Also a ``ValueError``; the command line exits 2.
    """

    exit_code = 2
