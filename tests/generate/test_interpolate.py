"""Interpolation paths (slerp in z, lerp in w) and the video writers (frame counts, alpha)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from avatarforge.generate import interpolate, save_video
from avatarforge.generate.interpolate import interpolation_latents, lerp, slerp
from avatarforge.postprocess.export import load_animation


def test_slerp_endpoints_and_norm():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(4, 128, generator=g), torch.randn(4, 128, generator=g)
    assert torch.equal(slerp(a, b, torch.zeros(4)), a) and torch.equal(slerp(a, b, torch.ones(4)), b)
    mid = slerp(a, b, torch.full((4,), 0.5))
    # Gaussian latents keep their typical norm along the great circle; the chord shrinks.
    typical = (a.norm(dim=1) + b.norm(dim=1)) / 2
    assert torch.allclose(mid.norm(dim=1), typical, rtol=0.05)
    assert (lerp(a, b, torch.full((4,), 0.5)).norm(dim=1) < 0.8 * typical).all()
    # Parallel vectors fall back to lerp instead of dividing by sin(0).
    assert torch.allclose(slerp(a[:1], 2 * a[:1], torch.tensor([0.5])), 1.5 * a[:1])


def test_frames_hit_the_keyframes(cgan_pipe, sg_pipe):
    for pipe in (cgan_pipe, sg_pipe):
        keys = pipe(seeds="1,5,9").images
        frames = interpolate(pipe, [1, 5, 9], frames=9)
        assert frames.shape == (9, *keys.shape[1:])
        assert frames[0].tobytes() == keys[0].tobytes() and frames[-1].tobytes() == keys[2].tobytes()
        assert frames[4].tobytes() == keys[1].tobytes()
        looped = interpolate(pipe, [1, 5, 9], frames=9, loop=True)
        for i, k in ((0, 0), (3, 1), (6, 2)):
            assert looped[i].tobytes() == keys[k].tobytes()
        assert len({f.tobytes() for f in looped}) == 9


def test_stylegan_path_is_linear_in_w_and_labels_blend(sg_pipe, cgan_pipe):
    lat = interpolation_latents(sg_pipe, [2, 3], frames=5)
    wa, wb = lat.ws[0], lat.ws[-1]
    assert torch.allclose(lat.ws[2], (wa + wb) / 2, atol=1e-6)
    assert torch.allclose(lat.ws[1], wa + 0.25 * (wb - wa), atol=1e-6)
    # Conditional z-space models blend the label embeddings between keyframes.
    c = interpolation_latents(cgan_pipe, [2, 3], frames=5, attrs=None)
    assert c.label_t.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    with pytest.raises(ValueError, match="two seeds"):
        interpolation_latents(sg_pipe, [2], frames=5)


def test_video_formats_frame_counts_and_alpha(sg_pipe, tmp_path):
    frames = interpolate(sg_pipe, [1, 2, 3], frames=10)
    assert frames.shape[-1] == 4 and 0 < (frames[..., 3] < 255).mean() < 1  # real transparency
    # APNG: 8-bit alpha, exact pixels.
    apng, _ = load_animation(save_video(tmp_path / "a.png", frames, fps=12))
    assert len(apng) == 10 and all(np.array_equal(a, f) for a, f in zip(apng, frames))
    # WebP (lossless): 8-bit alpha exact; colour exact where visible.
    webp, durations = load_animation(save_video(tmp_path / "a.webp", frames, fps=10))
    assert len(webp) == 10 and durations[0] == 100
    for w, f in zip(webp, frames):
        assert np.array_equal(w[..., 3], f[..., 3])
        vis = f[..., 3] > 0
        assert np.array_equal(w[vis], f[vis])
    # GIF: binary alpha at 128.
    gif, _ = load_animation(save_video(tmp_path / "a.gif", frames))
    assert len(gif) == 10
    assert set(np.unique(gif[0][..., 3])) <= {0, 255}
    assert np.array_equal(gif[0][..., 3] == 255, frames[0][..., 3] >= 128)
    # MP4: no alpha, composited on the background colour.
    mp4 = save_video(tmp_path / "a.mp4", frames, fps=24, background="black")
    cap = cv2.VideoCapture(str(mp4))
    count, first = 0, None
    while True:
        ok, fr = cap.read()
        if not ok:
            break
        first = fr if first is None else first
        count += 1
    cap.release()
    assert count == 10 and first.shape == (32, 32, 3)
    # Transparent corners come out near the black background (lossy codec: a tolerance).
    clear = frames[0][..., 3] == 0
    if clear.any():
        assert first[clear].mean() < 40
    with pytest.raises(ValueError, match="unknown video format"):
        save_video(tmp_path / "a.avi", frames)
