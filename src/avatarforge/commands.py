"""Running a command: the one place that turns errors into one-line messages and exit codes.

Every ``avatarforge`` command (and each ``python -m avatarforge.<part>.cli``) parses its
arguments, then hands the work to :func:`run_command`, so every command reports the same
error the same way. On the ground floor: it imports only :mod:`avatarforge.errors`, so a
command of any layer can use it and no library module has to import a CLI.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from avatarforge.errors import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    CommandFailed,
    ConfigError,
    MissingDependencyError,
    UsageError,
)

__all__ = ["USER_ERRORS", "error_message", "report_error", "run_command"]

#: Errors whose message is written for people (it names the problem and the fix): reported
#: in one line with :data:`~avatarforge.errors.EXIT_USAGE`, never a traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (
    UsageError,
    ConfigError,
    MissingDependencyError,
    KeyError,
    ValueError,
    FileNotFoundError,
    FileExistsError,
)


def error_message(error: BaseException) -> str:
    """The text of ``error`` for a person: a KeyError's message without the quotes
    ``str(KeyError("x"))`` adds."""
    if isinstance(error, KeyError) and error.args:
        return str(error.args[0])
    return str(error)


def report_error(prog: str, message: object, code: int = EXIT_USAGE) -> int:
    """Print ``PROG: error: MESSAGE`` on stderr (argparse's form) and return ``code``."""
    print(f"{prog}: error: {message}", file=sys.stderr)
    return code


def _silence_stdout() -> None:
    # Point stdout at /dev/null so the interpreter's final flush cannot raise BrokenPipeError
    # again (and print a traceback) on the way out.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def run_command(
    prog: str,
    func: Callable[[], int | None],
    *,
    os_error_code: int = EXIT_USAGE,
    exit: bool = False,
) -> int:
    """Run ``func()`` and return its exit code, mapping what it raises to a code and a message.

    * returned ``None`` -> :data:`~avatarforge.errors.EXIT_OK`; an int is returned as is;
    * :class:`KeyboardInterrupt` -> 130 (``PROG: interrupted``);
    * :class:`BrokenPipeError` -> 0, quietly: the reader of stdout closed the pipe early
      (``avatarforge post --list-ops | head``) and has what it wanted; stdout only ever
      carries reports, never results, so nothing was lost;
    * :class:`~avatarforge.errors.CommandFailed` -> its ``exit_code`` (``PROG: MESSAGE``);
    * :data:`USER_ERRORS` (UsageError, ConfigError, MissingDependencyError, KeyError,
      ValueError, FileNotFoundError, FileExistsError) -> 2 (``PROG: error: MESSAGE``);
    * any other :class:`OSError` -> ``os_error_code`` (``PROG: error: MESSAGE``), e.g.
      :data:`~avatarforge.errors.EXIT_WRITE` for a command whose failed writes mean a
      full disk rather than a bad path.

    Anything else is a bug and keeps its traceback.

    Args:
        prog: the command's name in messages (``avatarforge train``).
        func: the command's work; returns an exit code (or None for success).
        os_error_code: the exit code of an OSError other than a missing or existing file.
        exit: raise :class:`SystemExit` with the code of an error caught here instead of
            returning it (how argparse ends on a usage error), for the outermost command.
            A code that ``func`` returns is returned either way.
    """
    try:
        code = func()
        return EXIT_OK if code is None else int(code)
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_OK
    except KeyboardInterrupt:
        print(f"\n{prog}: interrupted", file=sys.stderr)
        code = EXIT_INTERRUPTED
    except CommandFailed as e:
        print(f"{prog}: {e}", file=sys.stderr)
        code = e.exit_code
    except USER_ERRORS as e:
        code = report_error(prog, error_message(e), EXIT_USAGE)
    except OSError as e:
        code = report_error(prog, e, os_error_code)
    if exit:
        raise SystemExit(code)
    return code
