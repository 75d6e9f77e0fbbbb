import json
import os

import pytest

from avatarforge.fileio import atomic_directory, atomic_write_json, atomic_write_text, atomic_writer


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path):
    p = tmp_path / "a.json"
    atomic_write_json(p, {"x": 1})
    atomic_write_json(p, {"x": 2})
    assert json.loads(p.read_text()) == {"x": 2}
    assert os.listdir(tmp_path) == ["a.json"]


def test_atomic_writer_failure_keeps_old_content(tmp_path):
    p = tmp_path / "a.txt"
    atomic_write_text(p, "old")
    with pytest.raises(RuntimeError), atomic_writer(p) as f:
        f.write(b"half of the new")
        raise RuntimeError("killed mid-write")
    assert p.read_text() == "old"
    assert os.listdir(tmp_path) == ["a.txt"]


def test_atomic_directory_success_failure_and_overwrite(tmp_path):
    out = tmp_path / "ds"
    with atomic_directory(out) as tmp:
        (tmp / "f").write_text("1")
        assert not out.exists()  # nothing visible until the body completes
    assert (out / "f").read_text() == "1"

    with pytest.raises(FileExistsError, match="overwrite"), atomic_directory(out):
        pass

    with pytest.raises(RuntimeError), atomic_directory(out, overwrite=True) as tmp:
        (tmp / "f").write_text("2")
        raise RuntimeError("boom")
    assert (out / "f").read_text() == "1"  # the failed rebuild changed nothing

    with atomic_directory(out, overwrite=True) as tmp:
        (tmp / "g").write_text("3")
    assert sorted(os.listdir(out)) == ["g"]
    assert sorted(os.listdir(tmp_path)) == ["ds"]  # no temp or old directories left behind


def test_written_files_follow_umask_not_0600(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "x", "1")
        with atomic_directory(tmp_path / "d") as tmp:
            (tmp / "f").write_text("1")
    finally:
        os.umask(old)
    assert (tmp_path / "x").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o755


def test_stale_partial_of_a_dead_process_is_removed(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead_pid = int(proc.stdout)
    stale = tmp_path / f".ds.{dead_pid}.abc123.partial"
    stale.mkdir()
    (stale / "images.npy").write_bytes(b"half")
    live = tmp_path / f".ds.{os.getpid()}.zzz.partial"  # another build by a live process: untouched
    live.mkdir()
    with atomic_directory(tmp_path / "ds"):
        pass
    assert not stale.exists() and live.exists()
