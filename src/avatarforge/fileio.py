"""Files on disk: atomic writes, advisory locks, the cache directory, content hashes.

Everything AvatarForge writes (checkpoints, data sets, reports, images) goes through these
helpers so that a killed process never leaves a half-written file under the final name:
data is written to a temporary sibling and moved into place with ``os.replace``, which is
atomic on POSIX file systems when source and destination share a directory.

Temporary names carry the writer's process id (``.NAME.<pid>.<random>.tmp`` files,
``.NAME.<pid>.<random>.partial`` directories), so :func:`remove_stale_temp` can tell what a
killed process left behind from what a live one is still writing.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


__all__ = [
    "CACHE_ENV",
    "atomic_directory",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "atomic_writer",
    "default_cache_dir",
    "file_lock",
    "file_sha256",
    "remove_stale_temp",
]

#: Environment variable naming the cache directory (reference statistics, downloaded weights).
CACHE_ENV = "AVATARFORGE_CACHE"


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike, mode: str = "wb") -> Iterator[Any]:
    """Open a temporary file next to ``path``; on success fsync it and rename it to ``path``.

    On an exception the temporary file is removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The pid in the name lets a later run remove what a killed writer left behind.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp creates 0600 files; give the result the permissions a plain open() would.
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    with atomic_writer(path, "wb") as f:
        f.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> Path:
    """Serialise ``obj`` as JSON and write it to ``path`` atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=False, allow_nan=True) + "\n")


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Build a directory in a temporary sibling and rename it to ``path`` on success.

    Yields the temporary directory. If the body raises (or the process dies), ``path`` is
    never created or changed. With ``overwrite=True`` an existing ``path`` is replaced only
    after the new directory is complete.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is false (checked before any work).
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True (CLI: --overwrite) to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(path)
    # The pid in the name lets a later run remove what a killed run left behind.
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".partial", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _remove_stale_partials(path: Path) -> None:
    """Delete ``.NAME.<pid>.*.partial`` directories whose process no longer exists."""
    for cand in path.parent.glob(f".{glob.escape(path.name)}.*.partial"):
        parts = cand.name[len(path.name) + 2 :].split(".")
        if parts and parts[0].isdigit() and not _pid_alive(int(parts[0])):
            shutil.rmtree(cand, ignore_errors=True)


# mkstemp/mkdtemp add 8 random characters from [a-z0-9_]; matching them exactly keeps the
# clean-up away from dot-files that are not ours.
_TEMP_RE = re.compile(r"^\.(?P<name>.+?)(?:\.(?P<pid>\d+))?\.[a-z0-9_]{8}\.(?P<kind>tmp|partial)$")
_OLD_RE = re.compile(r"^\.(?P<name>.+)\.old-(?P<pid>\d+)$")


def _dead(pid: str | None) -> bool:
    # No pid: written by a version before pids were recorded, so by a process long gone.
    return pid is None or not _pid_alive(int(pid))


def remove_stale_temp(directory: str | os.PathLike) -> list[Path]:
    """Clean up what killed writers left in ``directory`` (not recursive); returns the paths.

    * ``.NAME.<pid>.XXXXXXXX.tmp`` files of :func:`atomic_writer` and
      ``.NAME.<pid>.XXXXXXXX.partial`` directories of :func:`atomic_directory` whose process
      is gone (or that carry no pid) are deleted;
    * ``.NAME.old-<pid>`` (the previous ``NAME`` while :func:`atomic_directory` swaps in a
      replacement) is moved back to ``NAME`` if the swap was cut between its two renames,
      and deleted otherwise.

    Temporary files of live processes (this one included) are left alone.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    touched: list[Path] = []
    for entry in sorted(directory.iterdir()):
        if not entry.name.startswith("."):
            continue
        m = _TEMP_RE.match(entry.name)
        if m and _dead(m.group("pid")):
            if m.group("kind") == "tmp" and entry.is_file() and not entry.is_symlink():
                entry.unlink(missing_ok=True)
                touched.append(entry)
            elif m.group("kind") == "partial" and entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
                touched.append(entry)
            continue
        m = _OLD_RE.match(entry.name)
        if m and entry.is_dir() and not entry.is_symlink() and _dead(m.group("pid")):
            target = directory / m.group("name")
            if target.exists():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                os.replace(entry, target)  # the replacement never arrived: keep the previous
            touched.append(entry)
    return touched


def default_cache_dir() -> Path:
    """``$AVATARFORGE_CACHE``, else ``~/.cache/avatarforge`` (not created here)."""
    env = os.environ.get(CACHE_ENV, "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "avatarforge"


@contextlib.contextmanager
def file_lock(path: str | os.PathLike) -> Iterator[None]:
    """Exclusive advisory lock on ``path`` (created if needed) for the duration of the block.

    Two processes filling the same cache entry then compute it once: the second waits and
    finds the entry written.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


_HASH_MEMO: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | os.PathLike, *, memoize: bool = False) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks.

    With ``memoize``, the digest is remembered per (resolved path, size, mtime) for the life
    of the process: for weights hashed again on every extractor load. Integrity checks
    leave it off, since a corrupted file can keep its size and mtime.
    """
    p = Path(path)
    key = None
    if memoize:
        st = p.stat()
        key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
        if key in _HASH_MEMO:
            return _HASH_MEMO[key]
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    digest = h.hexdigest()
    if key is not None:
        _HASH_MEMO[key] = digest
    return digest
