import json
import os

import pytest

from avatarforge.fileio import (
    atomic_directory,
    atomic_write_json,
    atomic_write_text,
    atomic_writer,
    remove_stale_temp,
)


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


def _dead_pid() -> int:
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    return int(proc.stdout)


def test_temp_names_carry_the_writers_pid(tmp_path):
    seen = []
    with atomic_writer(tmp_path / "latest") as f:
        seen = [p.name for p in tmp_path.iterdir()]
        f.write(b"x")
    (name,) = seen
    assert name.startswith(f".latest.{os.getpid()}.") and name.endswith(".tmp")


def test_remove_stale_temp_cleans_only_what_dead_writers_left(tmp_path):
    dead = _dead_pid()
    stale_files = [
        f".latest.{dead}.ab12cd34.tmp",
        ".latest.ab12cd34.tmp",
        f".config.yaml.{dead}.zz_9zz9z.tmp",
    ]
    for name in stale_files:
        (tmp_path / name).write_text("half")
    stale_dir = tmp_path / f".ckpt-00000010.{dead}.q1w2e3r4.partial"
    stale_dir.mkdir()
    (stale_dir / "f").write_text("half")
    keep = [
        f".latest.{os.getpid()}.ab12cd34.tmp",  # a live writer (this process)
        ".notes.tmp",  # not one of ours: no 8-character random part
        "visible.tmp",
    ]
    for name in keep:
        (tmp_path / name).write_text("keep")
    # An overwrite cut between its two renames: "best" is gone, its previous copy is moved back.
    (tmp_path / f".best.old-{dead}").mkdir()
    (tmp_path / f".best.old-{dead}" / "best.json").write_text("{}")
    # The same cut after the second rename: the new copy is in place, the old one goes.
    (tmp_path / "ds").mkdir()
    (tmp_path / f".ds.old-{dead}").mkdir()
    removed = {p.name for p in remove_stale_temp(tmp_path)}
    assert removed == {*stale_files, stale_dir.name, f".best.old-{dead}", f".ds.old-{dead}"}
    assert sorted(os.listdir(tmp_path)) == sorted([*keep, "best", "ds"])
    assert (tmp_path / "best" / "best.json").is_file()
    assert remove_stale_temp(tmp_path / "missing") == []
