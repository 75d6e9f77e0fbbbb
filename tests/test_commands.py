"""``avatarforge.commands.run_command``: every command maps what it raises the same way."""

from __future__ import annotations

import errno
import os
import subprocess
import sys

import pytest

from avatarforge.commands import run_command
from avatarforge.errors import (
    EXIT_DIVERGED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    EXIT_WRITE,
    CommandFailed,
    ConfigError,
    MissingDependencyError,
    UsageError,
)


def _raise(error: BaseException):
    def func() -> int:
        raise error

    return func


def test_returned_code_passes_through_and_none_is_ok():
    assert run_command("prog", lambda: 1) == 1
    assert run_command("prog", lambda: None) == EXIT_OK
    # exit=True is for errors caught here only: a code the command returns is still returned.
    assert run_command("prog", lambda: 4, exit=True) == 4


@pytest.mark.parametrize(
    "error, message",
    [
        (UsageError("--n must be >= 1"), "--n must be >= 1"),
        (ConfigError("unknown key lr"), "unknown key lr"),
        (MissingDependencyError("pip install 'avatarforge[onnx]'"), "pip install 'avatarforge[onnx]'"),
        (KeyError("unknown model 'x'"), "unknown model 'x'"),  # no repr quotes around it
        (ValueError("bad value"), "bad value"),
        (FileNotFoundError("no checkpoint in runs/x"), "no checkpoint in runs/x"),
        (FileExistsError("out exists; pass --overwrite"), "out exists; pass --overwrite"),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else "",
)
def test_user_errors_are_one_line_usage_errors(error, message, capsys):
    # Whatever os_error_code says: a missing or existing file is the user's to fix.
    assert run_command("avatarforge x", _raise(error), os_error_code=EXIT_WRITE) == EXIT_USAGE
    assert capsys.readouterr().err == f"avatarforge x: error: {message}\n"


def test_other_os_errors_take_the_commands_code(capsys):
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert run_command("avatarforge train", _raise(full), os_error_code=EXIT_WRITE) == EXIT_WRITE
    assert capsys.readouterr().err == f"avatarforge train: error: {full}\n"
    assert run_command("avatarforge x", _raise(PermissionError("denied"))) == EXIT_USAGE


def test_command_failed_uses_its_own_code(capsys):
    class Diverged(CommandFailed):
        exit_code = EXIT_DIVERGED

    assert run_command("avatarforge train", _raise(Diverged("NaN kept coming back"))) == EXIT_DIVERGED
    assert capsys.readouterr().err == "avatarforge train: NaN kept coming back\n"


def test_training_diverged_is_a_command_failure():
    from avatarforge.train.guard import TrainingDiverged

    assert issubclass(TrainingDiverged, RuntimeError)  # callers that catch RuntimeError still do
    assert run_command("avatarforge train", _raise(TrainingDiverged("diverged"))) == EXIT_DIVERGED


def test_keyboard_interrupt_is_130(capsys):
    assert run_command("avatarforge x", _raise(KeyboardInterrupt())) == EXIT_INTERRUPTED
    assert "avatarforge x: interrupted" in capsys.readouterr().err


def test_exit_true_raises_system_exit_for_caught_errors(capsys):
    with pytest.raises(SystemExit) as e:
        run_command("avatarforge", _raise(ValueError("bad")), exit=True)
    assert e.value.code == EXIT_USAGE
    assert capsys.readouterr().err == "avatarforge: error: bad\n"


def test_bugs_keep_their_traceback():
    with pytest.raises(ZeroDivisionError):
        run_command("avatarforge x", _raise(ZeroDivisionError("bug")))


def test_broken_pipe_exits_zero_quietly():
    """A reader that closes stdout early (``... | head``) is no error, and no traceback."""
    code = (
        "import sys\n"
        "from avatarforge.commands import run_command\n"
        "def work():\n"
        "    for _ in range(100000):\n"
        "        print('line' * 20)\n"
        "sys.exit(run_command('prog', work))\n"
    )
    read_end, write_end = os.pipe()
    os.close(read_end)  # every write to the pipe now fails with EPIPE
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code], stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=60
        )
    finally:
        os.close(write_end)
    assert proc.returncode == EXIT_OK, proc.stderr
    assert proc.stderr == ""
