"""Ingest the user's own images into a packed data set (``avatarforge data prepare``).

Pipeline::

    scan sources (folders recursively, .zip archives, single files), sorted by path
      -> workers (multiprocessing Pool, ordered chunked imap): load_image + normalize_image
         + content hash + perceptual hash; a bad file becomes a "skip" result, never an error
      -> parent: exact / near dedupe, labels, PackedWriter.add (streamed to disk)
      -> report.json + preview.png inside the data set; everything appears at OUT atomically

The result is deterministic: items are processed and written in sorted source order whatever
the number of workers, and the first occurrence of a duplicate is the one kept.
"""

from __future__ import annotations

import collections
import contextlib
import csv
import itertools
import json
import math
import multiprocessing
import multiprocessing.pool
import numbers
import os
import signal
import sys
import time
import unicodedata
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from avatarforge.data.imagefile import (
    DEFAULT_MAX_PIXELS,
    IMAGE_EXTENSIONS,
    REASONS,
    ImageRejected,
    default_min_side,
    load_image,
    normalize_image,
    parse_color,
)
from avatarforge.data.packed import LabelField, LabelSchema, PackedWriter, pixel_hash

__all__ = [
    "DEDUPE_MODES",
    "PrepareReport",
    "hamming",
    "image_signature",
    "load_labels",
    "perceptual_hash",
    "prepare_dataset",
]

DEDUPE_MODES = ("exact", "near", "off")
FITS = ("crop", "pad")
PRODUCER = "avatarforge data prepare"
MAX_SIZE = 4096
# A zip member larger than this many bytes per allowed pixel cannot be a sensible image
# (uncompressed 16-bit RGBA is 8 B/px); refusing it early also defuses zip bombs.
_MAX_BYTES_PER_PIXEL = 8
# Separator between an archive and a member in source names: "faces.zip::a/b.png".
ZIP_SEP = "::"
_REASON_CRASHED = "crashed"
# Fewer files than this are processed in-process: starting a pool costs more than it saves.
_SERIAL_BELOW = 64
REPORT_REASONS = {
    **REASONS,
    _REASON_CRASHED: "the decoder crashed the worker process on this file",
}


# ----------------------------------------------------------------------------- report


@dataclass
class PrepareReport:
    """What ``prepare_dataset`` did; also written to ``OUT/report.json``.

    ``skipped`` rows are ``{"path", "reason", "message"}``; ``duplicates`` rows are
    ``{"path", "duplicate_of", "kind": "exact"|"near", "distance"}``.
    """

    kept: int
    skipped: list[dict[str, Any]]
    duplicates: list[dict[str, Any]]
    by_reason: dict[str, int]
    seconds: float
    out: str = ""
    size: int = 0
    channels: int = 0
    ignored: dict[str, int] = field(default_factory=dict)
    labels: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["reasons"] = {r: REPORT_REASONS.get(r, r) for r in sorted(self.by_reason)}
        return d

    def summary(self) -> str:
        """A few human-readable lines: kept / skipped by reason / duplicates / labels."""
        rate = (self.kept + len(self.skipped) + len(self.duplicates)) / max(self.seconds, 1e-9)
        mode = {3: "RGB", 4: "RGBA"}.get(self.channels, "?")
        lines = [
            f"Kept {self.kept:,} images ({self.size}x{self.size} {mode}) in {self.seconds:.1f} s "
            f"({rate:,.0f} files/s) -> {self.out}"
        ]
        if self.kept == 0:
            lines.append("WARNING: no usable images were found; the data set is empty")
        if self.skipped:
            parts = ", ".join(f"{r} {n:,}" for r, n in sorted(self.by_reason.items(), key=lambda kv: -kv[1]))
            lines.append(f"Skipped {len(self.skipped):,}: {parts}")
        if self.duplicates:
            kinds = collections.Counter(d["kind"] for d in self.duplicates)
            parts = ", ".join(f"{k} {n:,}" for k, n in sorted(kinds.items()))
            lines.append(f"Duplicates dropped {len(self.duplicates):,}: {parts}")
        if self.labels:
            lab = self.labels
            lines.append(
                f"Labels: {lab['labelled']:,} of {self.kept:,} images labelled "
                f"({', '.join(lab['fields'])}); {lab['unmatched_entries']:,} label entries matched no image"
            )
        if self.ignored:
            parts = ", ".join(
                f"{e} {n:,}" for e, n in sorted(self.ignored.items(), key=lambda kv: -kv[1])[:6]
            )
            lines.append(f"Ignored {sum(self.ignored.values()):,} files that are not images by name: {parts}")
        return "\n".join(lines)


# ----------------------------------------------------------------------------- hashing


def _dct_matrix(n: int) -> np.ndarray:
    """Orthonormal DCT-II matrix: ``D @ x`` is the DCT of a length-n vector."""
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    d = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    d[0] /= math.sqrt(2.0)
    return d.astype(np.float32)


_DCT32 = _dct_matrix(32)


# Near duplicates must also agree in colour: mean absolute difference of their 8x8 colour
# thumbnails at most this many levels (of 255). Re-encoded or resized copies differ by ~1;
# recoloured variants (a hair-colour swap, which a colour label needs) by 10 and more.
NEAR_COLOR_TOLERANCE = 8.0


def image_signature(image: np.ndarray) -> tuple[int, bytes]:
    """(64-bit pHash, 8x8 RGB thumbnail bytes) of an (H, W, 3|4) uint8 image.

    pHash: alpha composited onto mid grey -> 32x32 area average -> luminance -> 2-D DCT ->
    the 8x8 lowest frequencies -> one bit each: above the median of the 63 non-DC
    coefficients. Survives re-encoding and mild resizing; unrelated images differ in ~32
    bits, near-copies in a handful. It sees structure, not colour: the thumbnail is the
    colour check.
    """
    a = np.asarray(image)
    if a.shape[-1] == 4:  # integer "over" mid grey: cheap, and exact enough for a hash
        alpha = a[..., 3:4].astype(np.uint16)
        rgb = ((a[..., :3] * alpha + 128 * (255 - alpha) + 127) // 255).astype(np.uint8)
    else:
        rgb = np.ascontiguousarray(a[..., :3])
    small = np.asarray(Image.fromarray(rgb, "RGB").resize((32, 32), Image.Resampling.BOX), dtype=np.float32)
    luma = small @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    coeffs = (_DCT32 @ luma @ _DCT32.T)[:8, :8].ravel()
    median = np.sort(coeffs[1:])[31]  # of the 63 AC coefficients
    bits = coeffs > median
    thumb = small.reshape(8, 4, 8, 4, 3).mean(axis=(1, 3))
    return int.from_bytes(np.packbits(bits).tobytes(), "big"), np.rint(thumb).astype(np.uint8).tobytes()


def perceptual_hash(image: np.ndarray) -> int:
    """64-bit pHash of an (H, W, 3|4) uint8 image (see :func:`image_signature`)."""
    return image_signature(image)[0]


def hamming(a: int, b: int) -> int:
    """Number of differing bits between two 64-bit hashes."""
    return (a ^ b).bit_count()


class _NearIndex:
    """Find a stored 64-bit hash within ``threshold`` bits, sub-linearly.

    Multi-index hashing: split the hash into ``threshold + 1`` bands; by the pigeonhole
    principle two hashes within ``threshold`` bits agree exactly on at least one band, so
    only items sharing a band value need a full comparison.
    """

    def __init__(self, threshold: int) -> None:
        self.threshold = threshold
        nb = min(threshold + 1, 64)
        edges = [round(i * 64 / nb) for i in range(nb + 1)]
        self.bands = [(lo, (1 << (hi - lo)) - 1) for lo, hi in itertools.pairwise(edges)]
        self.tables: list[dict[int, list[int]]] = [{} for _ in self.bands]
        self.hashes: list[int] = []

    def query(self, h: int, accept: Callable[[int], bool] | None = None) -> tuple[int, int] | None:
        """(index, distance) of the closest stored hash within the threshold (lowest index on
        ties) for which ``accept(index)`` holds, or None."""
        cand: set[int] = set()
        for (shift, mask), table in zip(self.bands, self.tables):
            cand.update(table.get((h >> shift) & mask, ()))
        hits = sorted((hamming(h, self.hashes[i]), i) for i in cand)
        for d, idx in hits:
            if d > self.threshold:
                break
            if accept is None or accept(idx):
                return idx, d
        return None

    def add(self, h: int) -> int:
        idx = len(self.hashes)
        self.hashes.append(h)
        for (shift, mask), table in zip(self.bands, self.tables):
            table.setdefault((h >> shift) & mask, []).append(idx)
        return idx


class _Deduper:
    """Remembers kept items; says whether a new one duplicates one of them."""

    def __init__(self, mode: str, threshold: int) -> None:
        self.mode = mode
        self.exact: dict[str, str] = {}
        self.near = _NearIndex(threshold) if mode == "near" else None
        self.near_sources: list[str] = []
        self.thumbs: list[np.ndarray] = []

    def check(self, source: str, sha: str, signature: tuple[int, bytes] | None) -> dict[str, Any] | None:
        """None (and remember the item) if new, else the duplicate's report row."""
        if self.mode == "off":
            return None
        first = self.exact.get(sha)
        if first is not None:
            return {"path": source, "duplicate_of": first, "kind": "exact", "distance": 0}
        if self.near is not None and signature is not None:
            phash, thumb_bytes = signature
            thumb = np.frombuffer(thumb_bytes, dtype=np.uint8).astype(np.int16)

            def same_colours(idx: int) -> bool:
                return float(np.abs(self.thumbs[idx] - thumb).mean()) <= NEAR_COLOR_TOLERANCE

            hit = self.near.query(phash, same_colours)
            if hit is not None:
                return {
                    "path": source,
                    "duplicate_of": self.near_sources[hit[0]],
                    "kind": "near",
                    "distance": hit[1],
                }
            self.near.add(phash)
            self.near_sources.append(source)
            self.thumbs.append(thumb)
        self.exact[sha] = source
        return None


# ----------------------------------------------------------------------------- labels


def _norm_key(name: str) -> str:
    """Label-file keys and image paths compare as NFC Unicode with '/' separators (macOS
    stores names decomposed, Windows users type backslashes)."""
    s = unicodedata.normalize("NFC", str(name)).replace("\\", "/").strip()
    while s.startswith("./"):
        s = s[2:]
    return s


def _is_missing(v: Any) -> bool:
    if v is None:
        return True
    if isinstance(v, float) and math.isnan(v):
        return True
    return isinstance(v, str) and v.strip().lower() in ("", "nan", "na", "n/a", "none", "null")


def _as_number(v: Any) -> float | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        try:
            f = float(v.strip())
        except ValueError:
            return None
        return f if math.isfinite(f) else None
    return None


def _read_label_rows(path: Path) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """(column names in order, {file key: {column: raw value}}) from a CSV or JSON file."""
    text = path.read_text("utf-8-sig")  # -sig: Excel writes a BOM
    is_json = path.suffix.lower() == ".json" or (path.suffix.lower() != ".csv" and text.lstrip()[:1] in "{[")
    rows: dict[str, dict[str, Any]] = {}
    columns: dict[str, None] = {}  # ordered set
    if is_json:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"--labels {path}: not valid JSON ({e})") from None
        if isinstance(data, list):  # also accept [{"file": ..., attr: ...}, ...]
            items: Iterable[tuple[Any, Any]] = (
                (d.get("file"), {k: v for k, v in d.items() if k != "file"})
                if isinstance(d, dict)
                else (None, d)
                for d in data
            )
        elif isinstance(data, dict):
            items = data.items()
        else:
            items = ()
        for name, attrs in items:
            if not isinstance(name, str) or not isinstance(attrs, dict):
                raise ValueError(
                    f'--labels {path}: expected {{"file name": {{"attribute": value, ...}}, ...}}, '
                    f"got an entry {name!r}: {type(attrs).__name__}"
                )
            for k in attrs:
                columns[str(k)] = None
            rows[_norm_key(name)] = {str(k): v for k, v in attrs.items()}
        return list(columns), rows
    reader = csv.reader(text.splitlines())
    header = [h.strip() for h in next(reader, [])]
    lowered = [h.lower() for h in header]
    file_col = next(
        (lowered.index(c) for c in ("file", "filename", "file_name", "path") if c in lowered), None
    )
    if file_col is None:
        raise ValueError(
            f"--labels {path}: the CSV header must have a 'file' column (e.g. 'file,hair,eyes'); "
            f"found columns: {', '.join(header) or '(none)'}"
        )
    names = [h for i, h in enumerate(header) if i != file_col]
    if any(not n for n in names) or len(set(names)) != len(names):
        raise ValueError(f"--labels {path}: column names must be non-empty and unique, got {header}")
    for lineno, row in enumerate(reader, start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) > len(header):
            raise ValueError(
                f"--labels {path}, line {lineno}: {len(row)} cells but the header has {len(header)}"
            )
        row = row + [""] * (len(header) - len(row))
        rows[_norm_key(row[file_col])] = {h: row[i].strip() for i, h in enumerate(header) if i != file_col}
    return names, rows


def load_labels(path: str | os.PathLike) -> tuple[LabelSchema, dict[str, dict[str, Any]]]:
    """Read a labels file and infer its schema.

    Formats: CSV with a header ``file,attr1,attr2,...`` or JSON
    ``{"file name": {"attr": value, ...}, ...}``. File names may be base names or paths
    relative to the source folder (or archive). A column whose values are all numbers is
    continuous (range = min..max); any other column is categorical with its distinct values
    sorted. Empty cells, ``null`` and ``NaN`` mean "unknown".

    Returns:
        (schema, {normalised file key: {attr: value ready for LabelSchema.encode}})

    Raises:
        ValueError: unreadable or malformed file, naming the file and the problem.
    """
    p = Path(path)
    if not p.is_file():
        raise ValueError(
            f"--labels {p}: no such file; pass a CSV (file,attr,...) or JSON ({{file: {{attr: value}}}})"
        )
    try:
        columns, rows = _read_label_rows(p)
    except UnicodeDecodeError as e:
        raise ValueError(f"--labels {p}: not UTF-8 text ({e}); save it as UTF-8 CSV or JSON") from None
    fields: list[LabelField] = []
    for col in columns:
        vals = [r[col] for r in rows.values() if col in r and not _is_missing(r[col])]
        nums = [_as_number(v) for v in vals]
        if vals and all(n is not None for n in nums):
            lo, hi = min(nums), max(nums)  # type: ignore[type-var]
            fields.append(LabelField(col, "continuous", range=(float(lo), float(hi))))  # type: ignore[arg-type]
        else:
            values = tuple(sorted({str(v).strip() for v in vals}))
            if not values:
                continue  # a column with no values at all carries no information
            fields.append(LabelField(col, "categorical", values=values))
    schema = LabelSchema(tuple(fields))
    encoded: dict[str, dict[str, Any]] = {}
    for key, r in rows.items():
        enc: dict[str, Any] = {}
        for f in fields:
            v = r.get(f.name)
            if _is_missing(v):
                continue
            enc[f.name] = _as_number(v) if f.kind == "continuous" else str(v).strip()
        encoded[key] = enc
    return schema, encoded


class _LabelLookup:
    """Match items to label entries: relative path, then 'source-name/relative path', then
    base name; each exact first, then case-insensitively."""

    def __init__(self, entries: Mapping[str, dict[str, Any]]) -> None:
        self.entries = entries
        self.folded: dict[str, str] = {}
        for k in entries:
            self.folded.setdefault(k.casefold(), k)
        self.used: set[str] = set()

    def find(self, keys: Sequence[str]) -> dict[str, Any] | None:
        for k in keys:
            hit = k if k in self.entries else self.folded.get(k.casefold())
            if hit is not None:
                self.used.add(hit)
                return self.entries[hit]
        return None


# ----------------------------------------------------------------------------- scanning


@dataclass(frozen=True)
class _Candidate:
    source: str  # what reports and the manifest call it; also the sort key
    path: str  # file on disk (the archive for zip members)
    member: str | None  # name inside the archive, or None
    keys: tuple[str, ...]  # label lookup keys, most specific first


def _is_hidden(name: str) -> bool:
    return name.startswith(".") or name == "__MACOSX"


class _Scanner:
    def __init__(self, out_real: str) -> None:
        self.out_real = out_real
        self.candidates: dict[str, _Candidate] = {}
        self.skipped: list[dict[str, Any]] = []
        self.ignored: collections.Counter[str] = collections.Counter()
        self.visited: set[str] = set()

    def skip(self, path: str, reason: str, message: str) -> None:
        self.skipped.append({"path": path, "reason": reason, "message": message})

    def add(self, c: _Candidate) -> None:
        self.candidates.setdefault(c.source, c)

    def source(self, src: str) -> None:
        display = os.path.normpath(src)
        name = os.path.basename(display.rstrip("/\\"))
        if os.path.isdir(display):
            real = os.path.realpath(display)
            self.visited.add(real)
            self.walk(display, "", name)
        elif display.lower().endswith(".zip") and os.path.isfile(display):
            self.archive(display, Path(display).stem)
        else:  # a single file (or something broken that load_image will explain)
            self.add(_Candidate(display, display, None, (_norm_key(name),)))

    def walk(self, directory: str, rel: str, root_name: str) -> int:
        """Collect candidates below ``directory``; returns how many were found."""
        try:
            with os.scandir(directory) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as e:
            self.skip(directory, "unreadable", f"cannot list the folder: {e.strerror or e}")
            return 0
        found = 0
        for e in entries:
            if _is_hidden(e.name):
                continue
            rel_name = rel + e.name
            try:
                is_dir = e.is_dir()  # follows symlinks; False for broken/looping ones
            except OSError:
                is_dir = False
            ext = os.path.splitext(e.name)[1].lower()
            if is_dir:
                real = os.path.realpath(e.path)
                if real == self.out_real or real in self.visited:
                    continue  # the output itself, or a folder already seen (symlink cycle)
                self.visited.add(real)
                n = self.walk(e.path, rel_name + "/", root_name)
                if n == 0 and ext in IMAGE_EXTENSIONS:
                    self.skip(
                        e.path, "is_directory", "a directory named like an image, with no images inside"
                    )
                found += n
            elif ext in IMAGE_EXTENSIONS:
                key = _norm_key(rel_name)
                self.add(
                    _Candidate(
                        e.path, e.path, None, (key, f"{_norm_key(root_name)}/{key}", _norm_key(e.name))
                    )
                )
                found += 1
            elif ext == ".zip":
                found += self.archive(e.path, os.path.splitext(e.name)[0])
            else:
                self.ignored[ext or "(no extension)"] += 1
        return found

    def archive(self, path: str, stem: str) -> int:
        try:
            with zipfile.ZipFile(path) as zf:
                infos = zf.infolist()
        except zipfile.BadZipFile as e:
            self.skip(path, "corrupt", f"not a readable zip archive ({e})")
            return 0
        except OSError as e:
            self.skip(path, "unreadable", f"cannot read the archive: {e.strerror or e}")
            return 0
        found = 0
        for info in sorted(infos, key=lambda i: i.filename):
            name = info.filename
            parts = [p for p in name.split("/") if p]
            if info.is_dir() or not parts or any(_is_hidden(p) for p in parts):
                continue
            ext = os.path.splitext(parts[-1])[1].lower()
            if ext not in IMAGE_EXTENSIONS:
                self.ignored[ext or "(no extension)"] += 1
                continue
            key = _norm_key(name)
            source = f"{path}{ZIP_SEP}{name}"
            self.add(_Candidate(source, path, name, (key, f"{_norm_key(stem)}/{key}", _norm_key(parts[-1]))))
            found += 1
        return found


# ----------------------------------------------------------------------------- workers

# Per-process state of a worker: the options and the archives it has open.
_OPTS: dict[str, Any] = {}
_ZIPS: dict[str, zipfile.ZipFile] = {}
_MAX_OPEN_ZIPS = 8


def _set_options(opts: dict[str, Any]) -> None:
    global _OPTS, _ZIPS
    _OPTS = opts
    # Rebind rather than close: after fork these objects share file offsets with the parent.
    _ZIPS = {}


def _init_worker(opts: dict[str, Any]) -> None:
    # Ctrl-C goes to the whole process group; the parent alone handles it (terminating the
    # pool), so workers don't print a KeyboardInterrupt traceback each.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _set_options(opts)


def _read_member(path: str, member: str, max_bytes: int) -> bytes:
    zf = _ZIPS.get(path)
    if zf is None:
        if len(_ZIPS) >= _MAX_OPEN_ZIPS:
            _ZIPS.pop(next(iter(_ZIPS))).close()
        try:
            zf = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as e:
            raise ImageRejected("unreadable", f"cannot open the archive ({e})") from None
        _ZIPS[path] = zf
    info = zf.getinfo(member)
    if info.flag_bits & 0x1:
        raise ImageRejected("unreadable", "the archive member is encrypted")
    if info.file_size == 0:
        raise ImageRejected("empty", "the archive member is empty (0 bytes)")
    if info.file_size > max_bytes:
        raise ImageRejected(
            "too_large", f"{info.file_size:,} bytes is too large for an image within --max-pixels"
        )
    try:
        return zf.read(info)
    except (zipfile.BadZipFile, zlib.error) as e:
        raise ImageRejected("corrupt", f"the archive member is damaged ({e})") from None
    except EOFError as e:
        raise ImageRejected("truncated", f"the archive is truncated ({e})") from None
    except (NotImplementedError, RuntimeError, OSError) as e:
        raise ImageRejected("unreadable", f"cannot extract the archive member ({e})") from None


def _process(task: tuple[str, str | None]) -> tuple:
    """Worker: one candidate -> ("ok", array, sha256, signature) or ("skip", reason, message).

    Never raises: a bad file is a result like any other.
    """
    path, member = task
    o = _OPTS
    try:
        src: str | bytes = path if member is None else _read_member(path, member, o["max_bytes"])
        img = load_image(src, max_pixels=o["max_pixels"], draft_size=o["size"])
        arr = normalize_image(
            img, o["size"], fit=o["fit"], alpha=o["alpha"], background=o["background"], min_side=o["min_side"]
        )
        signature = image_signature(arr) if o["near"] else None
        return ("ok", arr, pixel_hash(arr), signature)
    except ImageRejected as e:
        return ("skip", e.reason, e.message)
    except MemoryError:
        return ("skip", "too_large", "not enough memory to decode this image")
    except Exception as e:  # a bug or an exotic decoder failure: report it, don't stop the run
        return ("skip", "error", f"{type(e).__name__}: {e}")


def _process_chunk(tasks: list[tuple[str, str | None]]) -> list[tuple]:
    return [_process(t) for t in tasks]


def _mp_context() -> multiprocessing.context.BaseContext:
    # fork starts workers in milliseconds and needs no re-import; macOS/Windows lack a safe
    # fork, so they get the platform default (spawn).
    if sys.platform.startswith("linux"):
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context()


def _lost_worker(pool: multiprocessing.pool.Pool, pids: set[int]) -> bool:
    """True when a worker died (segfault in a decoder, OOM kill). multiprocessing.Pool
    silently replaces dead workers and their task never completes, so we look for it."""
    procs = getattr(pool, "_pool", None)
    if procs is None:
        return False
    return {p.pid for p in procs} != pids or any(p.exitcode not in (None, 0) for p in procs)


def _results(tasks: list[tuple[str, str | None]], opts: dict[str, Any], workers: int) -> Iterator[tuple]:
    """Yield one result per task, in task order."""
    if workers <= 1 or len(tasks) < _SERIAL_BELOW:
        _set_options(opts)
        try:
            for t in tasks:
                yield _process(t)
        finally:
            for zf in _ZIPS.values():
                zf.close()
            _ZIPS.clear()
        return
    chunksize = max(1, min(64, len(tasks) // (workers * 8)))
    start = 0
    while start < len(tasks):
        # Our own chunking (imap with chunksize=1 over lists of tasks) because Pool.imap with
        # chunksize > 1 returns a plain generator, which has no next(timeout=...) to let us
        # notice a dead worker.
        chunks = [tasks[j : j + chunksize] for j in range(start, len(tasks), chunksize)]
        pool = _mp_context().Pool(workers, initializer=_init_worker, initargs=(opts,))
        crashed_at: int | None = None
        try:
            pids = {p.pid for p in getattr(pool, "_pool", [])}
            it = pool.imap(_process_chunk, chunks)
            i = start
            while i < len(tasks):
                try:
                    chunk_results = it.next(timeout=0.5)
                except multiprocessing.TimeoutError:
                    if _lost_worker(pool, pids):
                        crashed_at = i
                        break
                    continue
                yield from chunk_results
                i += len(chunk_results)
        finally:
            pool.terminate()
            pool.join()
        if crashed_at is None:
            return
        if chunksize == 1:
            # One file per task: the missing result is the file that killed its worker.
            yield ("skip", _REASON_CRASHED, "the image decoder crashed the worker process on this file")
            start = crashed_at + 1
        else:
            # The culprit is somewhere in the lost chunk: redo from there one file at a time.
            start, chunksize = crashed_at, 1


# ----------------------------------------------------------------------------- preview


def _write_preview(path: Path, images: list[np.ndarray], size: int) -> None:
    """A grid of the first images (transparency shown on a checkerboard) to eyeball."""
    if not images:
        return
    n = len(images)
    cols = max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / cols)
    pad = 2
    grid = np.full((rows * (size + pad) + pad, cols * (size + pad) + pad, 3), 255, dtype=np.uint8)
    yy, xx = np.mgrid[0:size, 0:size]
    board = np.where(((yy // 8 + xx // 8) % 2)[..., None] == 1, 204, 255).astype(np.float32)
    for k, im in enumerate(images):
        r, c = divmod(k, cols)
        if im.shape[2] == 4:
            a = im[..., 3:4].astype(np.float32) / 255.0
            im = (im[..., :3] * a + board * (1.0 - a)).round().astype(np.uint8)
        y, x = pad + r * (size + pad), pad + c * (size + pad)
        grid[y : y + size, x : x + size] = im
    Image.fromarray(grid, "RGB").save(path, "PNG")


# ----------------------------------------------------------------------------- main entry


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _validate(
    sources: Sequence[str | os.PathLike],
    out: Path,
    size: int,
    fit: str,
    alpha: str,
    dedupe: str,
    near_threshold: int,
    min_side: int | None,
    max_pixels: int,
    workers: int | None,
    overwrite: bool,
) -> tuple[int, tuple[int, int, int]]:
    """Check every option before any work; returns (channels, background)."""
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    if not sources:
        raise ValueError("no sources given; pass one or more folders, .zip archives or image files")
    for s in sources:
        if not os.path.lexists(s):
            raise ValueError(
                f"source {os.fspath(s)!r} does not exist; pass folders, .zip archives or image files"
            )
    if not _is_int(size) or not 1 <= size <= MAX_SIZE:
        raise ValueError(f"--size must be an integer from 1 to {MAX_SIZE} pixels (e.g. 64), got {size!r}")
    if fit not in FITS:
        raise ValueError(f"--fit must be one of: {', '.join(FITS)} (got {fit!r})")
    if alpha == "keep":
        channels, background = 4, (255, 255, 255)
    else:
        try:
            background = parse_color(alpha)
        except ValueError as e:
            raise ValueError(f"--alpha must be 'keep', 'white' or a colour: {e}") from None
        channels = 3
    if dedupe not in DEDUPE_MODES:
        raise ValueError(f"--dedupe must be one of: {', '.join(DEDUPE_MODES)} (got {dedupe!r})")
    if (
        isinstance(near_threshold, bool)
        or not isinstance(near_threshold, int)
        or not 0 <= near_threshold <= 32
    ):
        raise ValueError(
            f"near_threshold must be an integer from 0 to 32 bits of 64 (default 4), got {near_threshold!r}"
        )
    if min_side is not None and (not _is_int(min_side) or min_side < 0):
        raise ValueError(
            f"--min-side must be a non-negative integer (0 disables the check), got {min_side!r}"
        )
    if not _is_int(max_pixels) or max_pixels < 1:
        raise ValueError(
            f"--max-pixels must be a positive integer (default {DEFAULT_MAX_PIXELS:,}), got {max_pixels!r}"
        )
    if workers is not None and (not _is_int(workers) or workers < 1):
        raise ValueError(
            f"--workers must be a positive integer (or omitted for one per CPU core), got {workers!r}"
        )
    out_real = os.path.realpath(out)
    for s in sources:
        if not os.path.isdir(s):
            continue  # only a folder can be, or be inside, OUT
        s_real = os.path.realpath(s)
        if s_real == out_real or s_real.startswith(out_real + os.sep):
            raise ValueError(
                f"OUT {out} is (or contains) the source {os.fspath(s)!r}; choose a different OUT folder"
            )
    if os.path.lexists(out):
        if not overwrite:
            raise FileExistsError(f"{out} already exists; pass --overwrite (overwrite=True) to replace it")
        if not out.is_dir():
            raise ValueError(
                f"OUT {out} exists and is not a directory; refusing to replace it, choose another OUT"
            )
        if any(out.iterdir()) and not (out / "manifest.json").is_file():
            # --overwrite replaces a data set; it must never wipe an unrelated folder.
            raise ValueError(
                f"OUT {out} is a non-empty folder that is not a packed data set; refusing to replace it "
                "even with --overwrite, choose another OUT or delete it yourself"
            )
    return channels, background


def prepare_dataset(
    sources: Sequence[str | Path],
    out: str | Path,
    size: int,
    *,
    fit: str = "crop",
    alpha: str = "keep",
    labels: str | Path | None = None,
    dedupe: str = "exact",
    near_threshold: int = 4,
    min_side: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    workers: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> PrepareReport:
    """Build a packed data set at ``out`` from the user's images.

    Args:
        sources: folders (searched recursively), ``.zip`` archives, image files.
        out: the data set directory to create (atomically).
        size: output side in pixels.
        fit: ``"crop"`` (centre square) or ``"pad"`` (whole image, padded to a square).
        alpha: ``"keep"`` -> RGBA data set; ``"white"`` or a colour (``"#00ff00"``,
            ``"green"``, ``"0,255,0"``) -> RGB composited onto it.
        labels: optional CSV/JSON labels file (see :func:`load_labels`).
        dedupe: ``"exact"`` (identical pixels after normalising), ``"near"`` (also
            perceptual-hash distance <= ``near_threshold``), or ``"off"``.
        near_threshold: max Hamming distance (of 64 bits) for a near duplicate.
        min_side: skip images whose shorter side is smaller (default ``size // 2``).
        max_pixels: skip images with more pixels (decompression-bomb guard).
        workers: worker processes (default: one per available CPU core).
        overwrite: replace an existing data set at ``out``.
        progress: show a progress bar (on stderr). The caller prints ``report.summary()``.

    Bad files never stop the run: each is listed in ``report.skipped`` (and
    ``OUT/report.json``) with a reason code.

    Raises:
        ValueError: an invalid option, naming the option and the valid values.
        FileExistsError: ``out`` exists and ``overwrite`` is false (checked before any work).
    """
    t0 = time.perf_counter()
    out = Path(out)
    src_list = [sources] if isinstance(sources, (str, os.PathLike)) else list(sources)
    channels, background = _validate(
        src_list, out, size, fit, alpha, dedupe, near_threshold, min_side, max_pixels, workers, overwrite
    )
    # (numpy integers pass validation; plain ints go into the JSON manifest)
    size, near_threshold, max_pixels = int(size), int(near_threshold), int(max_pixels)
    min_side = None if min_side is None else int(min_side)
    workers = None if workers is None else int(workers)
    schema, label_entries = load_labels(labels) if labels is not None else (LabelSchema(), {})
    lookup = _LabelLookup(label_entries)
    eff_min_side = default_min_side(size) if min_side is None else min_side

    scanner = _Scanner(os.path.realpath(out))
    for s in src_list:
        scanner.source(os.fspath(s))
    candidates = sorted(scanner.candidates.values(), key=lambda c: c.source)
    tasks = [(c.path, c.member) for c in candidates]

    if workers is None:
        try:
            workers = len(os.sched_getaffinity(0))
        except AttributeError:  # not on Linux
            workers = os.cpu_count() or 1
    opts = {
        "size": size,
        "fit": fit,
        "alpha": "keep" if channels == 4 else "composite",
        "background": background,
        "min_side": eff_min_side,
        "max_pixels": max_pixels,
        "max_bytes": max_pixels * _MAX_BYTES_PER_PIXEL + (1 << 20),
        "near": dedupe == "near",
    }
    options = {
        "sources": [os.fspath(s) for s in src_list],
        "size": size,
        "fit": fit,
        "alpha": alpha,
        "background": list(background),
        "labels": os.fspath(labels) if labels is not None else None,
        "dedupe": dedupe,
        "near_threshold": near_threshold,
        "min_side": eff_min_side,
        "max_pixels": max_pixels,
    }

    skipped = list(scanner.skipped)
    duplicates: list[dict[str, Any]] = []
    deduper = _Deduper(dedupe, near_threshold)
    preview: list[np.ndarray] = []
    labelled = 0

    from tqdm.auto import tqdm

    with PackedWriter(
        out,
        size=size,
        channels=channels,
        schema=schema,
        options=options,
        overwrite=overwrite,
        producer=PRODUCER,
    ) as writer:
        bar = tqdm(
            total=len(tasks),
            desc="prepare",
            unit="img",
            disable=not progress,
            mininterval=0.5,
            dynamic_ncols=True,
        )
        try:
            with contextlib.closing(_results(tasks, opts, workers)) as results:
                for cand, res in zip(candidates, results):
                    bar.update(1)
                    if res[0] == "skip":
                        skipped.append({"path": cand.source, "reason": res[1], "message": res[2]})
                        continue
                    _, arr, sha, signature = res
                    dup = deduper.check(cand.source, sha, signature)
                    if dup is not None:
                        duplicates.append(dup)
                        continue
                    item_labels = lookup.find(cand.keys) if label_entries else None
                    labelled += bool(item_labels)
                    writer.add(arr, source=cand.source, labels=item_labels, content_hash=sha)
                    if len(preview) < 64:
                        preview.append(arr)
        finally:
            bar.close()

        skipped.sort(key=lambda d: d["path"])
        by_reason = dict(sorted(collections.Counter(d["reason"] for d in skipped).items()))
        report = PrepareReport(
            kept=writer.count,
            skipped=skipped,
            duplicates=duplicates,
            by_reason=by_reason,
            seconds=0.0,
            out=os.fspath(out),
            size=size,
            channels=channels,
            ignored=dict(sorted(scanner.ignored.items())),
            labels=(
                {
                    "file": os.fspath(labels),
                    "fields": schema.names,
                    "labelled": labelled,
                    "unmatched_entries": len(label_entries) - len(lookup.used),
                }
                if labels is not None
                else {}
            ),
        )
        with contextlib.suppress(OSError, ValueError):
            _write_preview(writer.tmp_dir / "preview.png", preview, size)
        report.seconds = round(time.perf_counter() - t0, 3)
        writer.write_json("report.json", report.to_json())
    report.seconds = round(time.perf_counter() - t0, 3)
    return report
