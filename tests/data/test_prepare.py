"""Ingest of user images into a packed data set (avatarforge.data.prepare)."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import avatarforge.data.prepare as prepare_mod
from avatarforge.data.packed import PackedWriter, read_manifest, read_schema
from avatarforge.data.prepare import hamming, perceptual_hash, prepare_dataset
from tests.data.conftest import BROKEN, VALID, Corpus, encode, smooth, solid

ROOT = Path(__file__).resolve().parents[2]
SIZE = 32


def by_source(out: Path) -> dict[str, np.ndarray]:
    images = np.load(out / "images.npy", mmap_mode="r")
    items = read_manifest(out)["items"]
    assert len(items) == len(images)
    return {it["source"]: np.asarray(images[i]) for i, it in enumerate(items)}


@pytest.fixture(scope="session")
def ingested(corpus: Corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("ingest") / "ds"
    report = prepare_dataset([corpus.root], out, SIZE, workers=1, progress=False)
    return report, out


def make_images(folder: Path, n: int, start: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(start, start + n):
        p = folder / f"img{i:03d}.png"
        p.write_bytes(encode(smooth(100 + i, 48), "PNG"))
        paths.append(p)
    return paths


# ----------------------------------------------------------------------------- the corpus


def test_every_valid_kept_every_broken_reported(ingested, corpus):
    report, out = ingested
    manifest = read_manifest(out)
    assert [it["source"] for it in manifest["items"]] == sorted(corpus.source(v) for v in VALID)
    assert report.kept == manifest["count"] == len(VALID)
    assert {d["path"]: d["reason"] for d in report.skipped} == {
        corpus.source(k): v for k, v in BROKEN.items()
    }
    assert all(d["message"] for d in report.skipped)
    assert report.duplicates == []
    assert report.by_reason["truncated"] == 3 and sum(report.by_reason.values()) == len(BROKEN)
    # Hidden files and __MACOSX are silently ignored; other names are counted, not reported.
    assert report.ignored == {".txt": 2}
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk["kept"] == report.kept and on_disk["skipped"] == report.skipped
    assert set(on_disk["reasons"]) == set(report.by_reason)
    assert np.load(out / "images.npy").shape == (len(VALID), SIZE, SIZE, 4)
    assert manifest["channels"] == 4 and manifest["options"]["min_side"] == SIZE // 2
    assert (out / "preview.png").is_file()
    summary = report.summary()
    assert f"Kept {len(VALID)}" in summary and "truncated 3" in summary and "broken_symlink 2" in summary


def test_pixels_match_independent_expectations(ingested, corpus):
    _, out = ingested
    img = {k: by_source(out)[corpus.source(k)].astype(int) for k in VALID}
    opaque = np.array([255])
    exact_solids = {
        "palette.png": (10, 200, 30),
        "gray.png": (77, 77, 77),
        "image.bmp": (200, 100, 50),
        "image.tiff": (12, 34, 56),
        "png_named.jpg": (90, 80, 70),
        "UPPER.PNG": (33, 66, 99),
        "nested/deeper/inner.png": (111, 122, 133),
        "archive.zip::photos/inzip.png": (44, 55, 66),
        "ünïcødé_画像.png": (150, 160, 170),
        "animated.gif": (255, 0, 0),  # the first frame, not the blue second one
        "portrait.png": (0, 255, 0),  # centre crop of red/green/blue bands
    }
    for name, rgb in exact_solids.items():
        assert (img[name] == np.concatenate([rgb, opaque])).all(), name
    for name, rgb, tol in [("big.jpg", (30, 160, 90), 4), ("cmyk.jpg", (255, 55, 0), 12)]:
        assert np.abs(img[name][..., :3] - rgb).max() <= tol, name
        assert (img[name][..., 3] == 255).all()

    rgba = img["rgba.png"]
    visible = rgba[..., 3] > 0
    assert (rgba[visible][:, 1] == 0).all()  # the invisible green never bleeds in
    assert (rgba[:, :12, :3] == (255, 0, 0)).all() and (rgba[:, 20:] == 0).all()

    pt = img["palette_transparent.png"]
    assert (pt[:14, :, 3] == 0).all() and (pt[18:] == (0, 0, 255, 255)).all()
    trns = img["rgb_trns.png"]
    assert (trns[:14, :, 3] == 0).all() and (trns[18:] == (240, 230, 10, 255)).all()
    webp = img["alpha.webp"]
    assert (webp[:14, :, 3] == 0).all() and (webp[18:] == (250, 10, 200, 255)).all()
    la = img["gray_alpha.png"]
    assert np.abs(la - (200, 200, 200, 128)).max() <= 1

    g16 = img["gray16.png"]  # 16-bit 65535 | 32768 -> 255 | 128, not clipped to 255 | 255
    assert (g16[:, :12, :3] == 255).all() and (g16[:, 20:, :3] == 128).all()
    bilevel = img["bilevel.png"]
    assert (bilevel[:, :12, :3] == 0).all() and (bilevel[:, 20:, :3] == 255).all()

    rot = img["exif_rotated.jpg"][..., :3]  # orientation 6: the stored left (black) is on top
    assert rot[:12].mean() < 20 and rot[20:].mean() > 235
    assert np.abs(rot[:12].mean() - rot[:, :12].mean()) > 60  # and it is not left/right

    prog = img["progressive.jpg"][..., :3].reshape(-1, 3).mean(0)
    src_mean = np.asarray(smooth(1), dtype=float).reshape(-1, 3).mean(0)
    assert np.abs(prog - src_mean).max() < 6


def test_parallel_run_is_identical(ingested, corpus, tmp_path, monkeypatch):
    _, out1 = ingested
    monkeypatch.setattr(prepare_mod, "_SERIAL_BELOW", 0)  # force the worker pool
    out2 = tmp_path / "par"
    report = prepare_dataset([corpus.root], out2, SIZE, workers=2, progress=False)
    assert (out1 / "images.npy").read_bytes() == (out2 / "images.npy").read_bytes()
    assert read_manifest(out1)["items"] == read_manifest(out2)["items"]
    assert report.skipped == json.loads((out1 / "report.json").read_text())["skipped"]


def test_sources_can_be_archives_files_and_folders(corpus, tmp_path):
    out = tmp_path / "mixed"
    report = prepare_dataset(
        [corpus.root / "archive.zip", corpus.root / "gray.png", corpus.root / "nested"],
        out,
        SIZE,
        progress=False,
    )
    assert sorted(by_source(out)) == sorted(
        [
            corpus.source("archive.zip::photos/inzip.png"),
            corpus.source("gray.png"),
            corpus.source("nested/deeper/inner.png"),
        ]
    )
    assert [d["reason"] for d in report.skipped] == ["corrupt"]


def test_composite_and_pad(corpus, tmp_path):
    out = tmp_path / "rgb"
    prepare_dataset(
        [corpus.root / "portrait.png", corpus.root / "rgba.png"], out, SIZE, fit="pad", alpha="#00ff00"
    )
    m = read_manifest(out)
    assert m["channels"] == 3 and m["options"]["background"] == [0, 255, 0]
    got = by_source(out)
    portrait = got[corpus.source("portrait.png")].astype(int)
    assert (portrait[:, :6] == (0, 255, 0)).all()  # padded with the background colour
    assert np.abs(portrait[2:6, 10:22] - (255, 0, 0)).max() <= 3  # (LANCZOS rings a little)
    assert np.abs(portrait[-6:-2, 10:22] - (0, 0, 255)).max() <= 3
    rgba = got[corpus.source("rgba.png")].astype(int)
    assert np.abs(rgba[:, 20:] - (0, 255, 0)).max() <= 3 and np.abs(rgba[:, :12] - (255, 0, 0)).max() <= 3


# ----------------------------------------------------------------------------- dedupe


def test_dedupe_exact_near_off(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    a = smooth(5, 96)
    (src / "a.png").write_bytes(encode(a, "PNG"))
    (src / "b.png").write_bytes(encode(a, "PNG", compress_level=1))  # same pixels, other bytes
    (src / "c.jpg").write_bytes(encode(a, "JPEG", quality=85))  # re-encoded: near, not exact
    (src / "d.png").write_bytes(encode(smooth(6, 96), "PNG"))  # unrelated
    # Same structure (flat), different colours: pHash alone cannot tell them apart.
    (src / "e.png").write_bytes(encode(solid((200, 30, 30), size=(96, 96)), "PNG"))
    (src / "f.png").write_bytes(encode(solid((30, 30, 200), size=(96, 96)), "PNG"))
    recolour = np.asarray(a).copy()
    recolour[:, :48] = recolour[:, :48, ::-1]  # swap red and blue in half the picture
    (src / "g.png").write_bytes(encode(Image.fromarray(recolour), "PNG"))

    r = prepare_dataset([src], tmp_path / "exact", SIZE, dedupe="exact", progress=False)
    assert r.kept == 6
    assert r.duplicates == [
        {"path": str(src / "b.png"), "duplicate_of": str(src / "a.png"), "kind": "exact", "distance": 0}
    ]

    r = prepare_dataset([src], tmp_path / "near", SIZE, dedupe="near", progress=False)
    assert r.kept == 5  # a, d, e, f, g
    kinds = {Path(d["path"]).name: (Path(d["duplicate_of"]).name, d["kind"]) for d in r.duplicates}
    assert kinds == {"b.png": ("a.png", "exact"), "c.jpg": ("a.png", "near")}
    assert 0 <= r.duplicates[1]["distance"] <= 4

    r = prepare_dataset([src], tmp_path / "off", SIZE, dedupe="off", progress=False)
    assert r.kept == 7 and r.duplicates == []

    ha, hd = (perceptual_hash(np.asarray(smooth(s, 32))) for s in (5, 6))
    assert hamming(ha, hd) > 12  # unrelated pictures are far apart


def test_near_index_matches_brute_force():
    rng = np.random.default_rng(0)
    hashes = [int(x) for x in rng.integers(0, 2**63, 300, dtype=np.int64)]
    for t in (0, 3, 9):
        idx = prepare_mod._NearIndex(t)
        for h in hashes[:200]:
            idx.add(h)
        for q in [*hashes[200:], hashes[5] ^ 0b1011, hashes[7] ^ (1 << 63)]:
            brute = [(hamming(q, h), i) for i, h in enumerate(hashes[:200]) if hamming(q, h) <= t]
            got = idx.query(q)
            assert (got is None) == (not brute)
            if brute:
                d, i = min(brute)
                assert got == (i, d)


# ----------------------------------------------------------------------------- labels


def labelled_src(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "x1.png").write_bytes(encode(solid((1, 1, 1)), "PNG"))
    (src / "sub" / "x2.png").write_bytes(encode(solid((2, 2, 2)), "PNG"))
    (src / "x3.png").write_bytes(encode(solid((3, 3, 3)), "PNG"))
    return src


def test_labels_csv(tmp_path):
    src = labelled_src(tmp_path)
    csv = tmp_path / "labels.csv"
    csv.write_text("file,hair,smile\nx1.png,pink,0.5\nsub/x2.png,blue,\nnothere.png,green,1\n", "utf-8")
    out = tmp_path / "ds"
    report = prepare_dataset([src], out, SIZE, labels=csv, progress=False)
    schema = read_schema(out)
    assert schema.names == ["hair", "smile"]
    assert schema["hair"].kind == "categorical" and schema["hair"].values == ("blue", "green", "pink")
    assert schema["smile"].kind == "continuous" and schema["smile"].range == (0.5, 1.0)
    labels = np.load(out / "labels.npy")
    rows = dict(zip([Path(it["source"]).name for it in read_manifest(out)["items"]], labels))
    assert rows["x1.png"].tolist() == [2.0, 0.5]
    assert rows["x2.png"][0] == 0.0 and math.isnan(rows["x2.png"][1])
    assert np.isnan(rows["x3.png"]).all()  # unlabelled
    assert report.labels == {
        "file": str(csv),
        "fields": ["hair", "smile"],
        "labelled": 2,
        "unmatched_entries": 1,
    }


def test_labels_json_matches_base_names(tmp_path):
    src = labelled_src(tmp_path)
    js = tmp_path / "labels.json"
    js.write_text(json.dumps({"x2.png": {"hair": "blue", "eyes": "red"}, "X3.PNG": {"hair": "pink"}}))
    out = tmp_path / "ds"
    report = prepare_dataset([src], out, SIZE, labels=js, progress=False)
    schema = read_schema(out)
    assert schema.names == ["hair", "eyes"]
    decoded = {
        Path(it["source"]).name: schema.decode(row)
        for it, row in zip(read_manifest(out)["items"], np.load(out / "labels.npy"))
    }
    assert decoded["x2.png"] == {"hair": "blue", "eyes": "red"}
    assert decoded["x3.png"] == {"hair": "pink", "eyes": None}  # case-insensitive fallback
    assert decoded["x1.png"] == {"hair": None, "eyes": None}
    assert report.labels["labelled"] == 2


def test_bad_labels_file_fails_before_work(tmp_path):
    src = labelled_src(tmp_path)
    bad = tmp_path / "labels.csv"
    bad.write_text("name,hair\nx1.png,pink\n")
    with pytest.raises(ValueError, match="'file' column"):
        prepare_dataset([src], tmp_path / "ds", SIZE, labels=bad, progress=False)
    with pytest.raises(ValueError, match="--labels"):
        prepare_dataset([src], tmp_path / "ds", SIZE, labels=tmp_path / "missing.json", progress=False)
    assert not (tmp_path / "ds").exists()


# ----------------------------------------------------------------------------- output safety


def test_rerun_refuses_before_work_and_overwrite_replaces(tmp_path, monkeypatch):
    src = tmp_path / "src"
    make_images(src, 3)
    out = tmp_path / "ds"
    prepare_dataset([src], out, SIZE, progress=False)

    def no_work(*a, **k):
        raise AssertionError("scanned the sources before refusing")

    with monkeypatch.context() as m:
        m.setattr(prepare_mod, "_Scanner", no_work)
        with pytest.raises(FileExistsError, match="--overwrite"):
            prepare_dataset([src], out, SIZE, progress=False)
    assert read_manifest(out)["size"] == SIZE

    prepare_dataset([src], out, np.int64(16), overwrite=True, progress=False)  # numpy ints are fine
    assert read_manifest(out)["size"] == 16 and np.load(out / "images.npy").shape == (3, 16, 16, 4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "src"]  # no temp dirs left


def test_overwrite_never_wipes_a_foreign_folder(tmp_path):
    src = tmp_path / "src"
    make_images(src, 2)
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.txt").write_text("do not delete")
    with pytest.raises(ValueError, match="not a packed data set"):
        prepare_dataset([src], precious, SIZE, overwrite=True, progress=False)
    with pytest.raises(ValueError, match="source"):
        prepare_dataset([src], src, SIZE, overwrite=True, progress=False)
    assert (precious / "thesis.txt").read_text() == "do not delete"
    assert len(list(src.iterdir())) == 2


def test_out_inside_a_source_is_not_ingested(tmp_path):
    src = tmp_path / "src"
    make_images(src, 3)
    out = src / "dataset"
    prepare_dataset([src], out, SIZE, progress=False)
    report = prepare_dataset([src], out, SIZE, overwrite=True, progress=False)
    assert report.kept == 3 and report.skipped == []  # its own preview.png was not picked up


def test_exception_midway_leaves_no_output(tmp_path, monkeypatch):
    src = tmp_path / "src"
    make_images(src, 6)
    out = tmp_path / "ds"
    real_add = PackedWriter.add

    def failing_add(self, *a, **k):
        if self.count == 3:
            raise KeyboardInterrupt  # what Ctrl-C looks like
        return real_add(self, *a, **k)

    monkeypatch.setattr(PackedWriter, "add", failing_add)
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset([src], out, SIZE, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]

    # With --overwrite, the previous data set survives a failed rebuild untouched.
    monkeypatch.setattr(PackedWriter, "add", real_add)
    prepare_dataset([src], out, SIZE, progress=False)
    before = (out / "images.npy").read_bytes()
    monkeypatch.setattr(PackedWriter, "add", failing_add)
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset([src], out, 16, overwrite=True, progress=False)
    assert (out / "images.npy").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "src"]


def test_sigkill_midway_leaves_no_output(tmp_path):
    src = tmp_path / "src"
    make_images(src, 12)
    out = tmp_path / "ds"
    marker = tmp_path / "started"
    script = textwrap.dedent(
        f"""
        import time
        from pathlib import Path
        from avatarforge.data.packed import PackedWriter
        from avatarforge.data.prepare import prepare_dataset

        real_add = PackedWriter.add
        def slow_add(self, *a, **k):
            i = real_add(self, *a, **k)
            Path({str(marker)!r}).touch()
            time.sleep(0.5)
            return i
        PackedWriter.add = slow_add
        prepare_dataset([{str(src)!r}], {str(out)!r}, 32, workers=1, progress=False)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env)
    try:
        deadline = time.time() + 60
        while not marker.exists():
            assert proc.poll() is None, "the ingest subprocess exited early"
            assert time.time() < deadline, "the ingest subprocess never started writing"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists()
    # Only the hidden temporary build dir may remain; nothing under OUT's name.
    assert all(p.name.startswith(".ds.") for p in tmp_path.iterdir() if p.name not in ("src", "started"))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="relies on fork to patch the workers")
def test_decoder_crash_in_a_worker_is_reported_not_fatal(tmp_path, monkeypatch):
    src = tmp_path / "src"
    make_images(src, 20)
    (src / "crash.png").write_bytes(encode(solid((9, 9, 9)), "PNG"))
    real_load = prepare_mod.load_image

    def crashy_load(path, **kw):
        if str(path).endswith("crash.png"):
            os._exit(139)  # what a segfault in a C decoder looks like to the pool
        return real_load(path, **kw)

    monkeypatch.setattr(prepare_mod, "load_image", crashy_load)
    monkeypatch.setattr(prepare_mod, "_SERIAL_BELOW", 0)
    report = prepare_dataset([src], tmp_path / "ds", SIZE, workers=2, progress=False)
    assert report.kept == 20
    assert report.skipped == [
        {"path": str(src / "crash.png"), "reason": "crashed", "message": report.skipped[0]["message"]}
    ]
    assert read_manifest(tmp_path / "ds")["count"] == 20


def test_unreadable_file_is_reported(tmp_path, monkeypatch):
    import avatarforge.data.imagefile as imagefile

    src = tmp_path / "src"
    make_images(src, 3)
    locked = src / "img001.png"
    real_open = open

    # chmod 000 means nothing to root (tests run as root here): simulate the kernel's answer.
    def guarded_open(path, *a, **k):
        if str(path) == str(locked):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *a, **k)

    monkeypatch.setattr(imagefile, "open", guarded_open, raising=False)
    report = prepare_dataset([src], tmp_path / "ds", SIZE, workers=1, progress=False)
    assert report.kept == 2
    assert [(d["path"], d["reason"]) for d in report.skipped] == [(str(locked), "unreadable")]


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads files whatever their mode")
def test_chmod_000_is_unreadable(tmp_path):
    src = tmp_path / "src"
    locked = make_images(src, 2)[0]
    locked.chmod(0)
    try:
        report = prepare_dataset([src], tmp_path / "ds", SIZE, progress=False)
    finally:
        locked.chmod(0o644)
    assert [d["reason"] for d in report.skipped] == ["unreadable"]


# ----------------------------------------------------------------------------- options


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"size": 0}, "--size"),
        ({"fit": "stretch"}, "--fit must be one of: crop, pad"),
        ({"alpha": "blurple"}, "--alpha must be 'keep', 'white' or a colour"),
        ({"dedupe": "fuzzy"}, "--dedupe must be one of: exact, near, off"),
        ({"near_threshold": 65}, "near_threshold"),
        ({"min_side": -1}, "--min-side"),
        ({"max_pixels": 0}, "--max-pixels"),
        ({"workers": 0}, "--workers"),
        ({"sources": ["no/such/folder"]}, "does not exist"),
        ({"sources": []}, "no sources"),
    ],
)
def test_bad_options_are_refused_before_work(tmp_path, kwargs, match):
    src = tmp_path / "src"
    make_images(src, 1)
    args = {"sources": [src], "out": tmp_path / "ds", "size": SIZE, "progress": False, **kwargs}
    with pytest.raises(ValueError, match=match):
        prepare_dataset(**args)
    assert not (tmp_path / "ds").exists()


# ----------------------------------------------------------------------------- real data


def test_realistic_shared_faces(shared_faces, tmp_path):
    files = sorted(shared_faces.glob("*.jpg"))[:200]
    labels_file = shared_faces / "labels.json"
    out = tmp_path / "faces"
    report = prepare_dataset(files, out, 64, labels=labels_file, dedupe="near", progress=False)
    assert report.skipped == []
    assert report.kept + len(report.duplicates) == 200 and report.kept >= 190
    images = np.load(out / "images.npy")
    assert images.shape == (report.kept, 64, 64, 4) and (images[..., 3] == 255).all()
    assert 40 < images[..., :3].mean() < 220 and images[..., :3].std() > 30  # real pictures
    schema = read_schema(out)
    entries = json.loads(labels_file.read_text())
    assert sorted(schema.names) == ["eyes", "hair"]
    for f in schema:
        assert f.kind == "categorical" and list(f.values) == sorted(f.values)
    items = read_manifest(out)["items"]
    rows = np.load(out / "labels.npy")
    labelled = 0
    for it, row in zip(items, rows):
        want = entries.get(Path(it["source"]).name)
        got = schema.decode(row)
        if want is None:
            assert all(v is None for v in got.values())
        else:
            labelled += 1
            assert got == {k: want.get(k) for k in schema.names}
    assert report.labels["labelled"] == labelled > 0
    assert Image.open(out / "preview.png").size[0] > 64
