"""The errors every part of AvatarForge shares, and the exit codes of its commands.

On the ground floor so that any layer can raise them and every command maps them the same
way (:func:`avatarforge.commands.run_command`): a user error is one line naming the problem
and the fix, never a traceback.
"""

from __future__ import annotations

__all__ = [
    "EXIT_DIVERGED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_PARTIAL",
    "EXIT_USAGE",
    "EXIT_WRITE",
    "CommandFailed",
    "ConfigError",
    "MissingDependencyError",
    "UsageError",
]

#: Finished.
EXIT_OK = 0
#: Finished, but some inputs failed (each one named on stderr).
EXIT_PARTIAL = 1
#: A usage, configuration or input error (argparse uses 2 for its own usage errors too).
EXIT_USAGE = 2
#: Training diverged (NaN/Inf kept coming back).
EXIT_DIVERGED = 3
#: A run could not be written (full disk, no permission, ...).
EXIT_WRITE = 4
#: Stopped by Ctrl-C (128 + SIGINT, as shells report it).
EXIT_INTERRUPTED = 130


class ConfigError(ValueError):
    """A configuration key or value is wrong; the message names it and what is accepted."""


class UsageError(Exception):
    """A command was given something it cannot use (the message names it and the fix).

    Printed as ``PROG: error: MESSAGE`` with exit code :data:`EXIT_USAGE`, no traceback.
    """


class MissingDependencyError(ImportError):
    """An optional dependency is not installed; the message names the ``pip install`` that adds it."""


class CommandFailed(Exception):
    """A failure a command reports in one line (``PROG: MESSAGE``) with its own exit code.

    Subclasses set :attr:`exit_code` (e.g. ``TrainingDiverged``: :data:`EXIT_DIVERGED`).
    """

    exit_code: int = EXIT_PARTIAL
