"""``.webm`` output (issue 18, defect 7): VP9 with alpha through a real encoder (PyAV's
libvpx-vp9), not OpenCV's FFmpeg fallback that printed "tag 0x30395056/'VP90' is not
supported". ``avatarforge.imageio.save_webm`` writes it; the files are decoded back here with
libvpx (the decoder that reads VP9's alpha plane, as browsers and OBS do)."""

from __future__ import annotations

import numpy as np
import pytest

from avatarforge.imageio import save_webm

av = pytest.importorskip("av", reason="PyAV (pip install av) writes .webm")


def _frames(n: int = 7, size: int = 32) -> list[np.ndarray]:
    """A square moving across a transparent background, its colour changing per frame."""
    out = []
    for i in range(n):
        f = np.zeros((size, size, 4), np.uint8)
        f[..., :3] = (30 * i, 180, 90)
        f[8:24, 2 + 2 * i : 18 + 2 * i, 3] = 255
        out.append(f)
    return out


def _decode(path) -> tuple[list[np.ndarray], dict]:
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        info = {"codec": stream.codec_context.name, **stream.metadata}
        dec = av.CodecContext.create("libvpx-vp9", "r")  # FFmpeg's own vp9 decoder drops alpha
        frames = [
            fr.to_ndarray(format="rgba") for pkt in c.demux(stream) if pkt.size for fr in dec.decode(pkt)
        ]
        frames += [fr.to_ndarray(format="rgba") for fr in dec.decode(None)]
    return frames, info


def test_webm_is_vp9_with_alpha_and_every_frame(tmp_path, capfd):
    src = _frames()
    path = save_webm(tmp_path / "talk.webm", src, fps=12, lossless=True)
    assert path.read_bytes()[:4] == b"\x1a\x45\xdf\xa3"  # EBML: a Matroska/WebM file
    frames, info = _decode(path)
    assert info["codec"] == "vp9" and info.get("alpha_mode") == "1"
    assert len(frames) == len(src) and frames[0].shape == (32, 32, 4)
    for got, want in zip(frames, src):
        assert np.array_equal(got[..., 3], want[..., 3])  # the alpha plane, exactly (lossless)
        inside = want[..., 3] == 255
        assert np.abs(got[inside, :3].astype(int) - want[inside, :3]).max() <= 3  # YUV rounding
    err = capfd.readouterr().err
    assert "not supported" not in err and "VP90" not in err
    with av.open(str(path)) as c:
        assert float(c.streams.video[0].average_rate) == 12.0


def test_lossy_webm_keeps_the_transparent_background(tmp_path):
    rng = np.random.default_rng(0)
    src = _frames(5, 48)
    for f in src:  # texture, so lossy compression has something to save
        f[..., :3] = rng.integers(0, 256, f[..., :3].shape, dtype=np.uint8)
    lossless = save_webm(tmp_path / "a.webm", src, fps=30, lossless=True).stat().st_size
    path = save_webm(tmp_path / "b.webm", src, fps=30, crf=40)
    frames, _ = _decode(path)
    assert len(frames) == 5 and path.stat().st_size < lossless
    for got, want in zip(frames, src):
        assert np.abs(got[..., 3].astype(int) - want[..., 3]).mean() < 8  # transparent stays transparent
    with pytest.raises(ValueError, match="crf must be"):
        save_webm(tmp_path / "c.webm", src, crf=99)
    with pytest.raises(ValueError, match="same size"):
        save_webm(tmp_path / "d.webm", [src[0], np.zeros((8, 8, 4), np.uint8)])
