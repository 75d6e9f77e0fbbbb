import numpy as np
import torch
from PIL import Image

from avatarforge.imageio import checkerboard, clean_alpha, from_uint8, make_grid, save_image, to_uint8


def test_uint8_round_trip_is_exact():
    a = np.random.default_rng(0).integers(0, 256, (2, 5, 7, 4), dtype=np.uint8)
    t = from_uint8(a)
    assert t.shape == (2, 4, 5, 7) and t.dtype == torch.float32
    assert t.min() >= -1 and t.max() <= 1
    assert np.array_equal(to_uint8(t), a)


def test_to_uint8_clamps():
    t = torch.tensor([-3.0, -1.0, 0.0, 1.0, 5.0]).view(1, 1, 1, 5)
    assert to_uint8(t).ravel().tolist() == [0, 0, 128, 255, 255]


def test_make_grid_layout_and_checker():
    imgs = np.zeros((5, 4, 4, 4), np.uint8)
    imgs[2, ..., 0] = 200
    imgs[2, ..., 3] = 255
    g = make_grid(imgs, nrow=3, padding=1)
    assert g.shape == (2 * 4 + 3, 3 * 4 + 4, 4)
    assert (g[1:5, 11:15, 0] == 200).all()  # third image: row 0, column 2
    c = make_grid(imgs, nrow=3, padding=1, alpha_backdrop="checker")
    assert c.shape[2] == 3
    assert (c[1:5, 1:5] == checkerboard(4, 4)).all()  # transparent image shows the checkerboard


def test_make_grid_accepts_tensors():
    g = make_grid(torch.zeros(4, 3, 8, 8), padding=0)
    assert g.shape == (16, 16, 3) and (g == 128).all()


def test_save_image_formats(tmp_path):
    a = np.random.default_rng(1).integers(0, 256, (6, 6, 4), dtype=np.uint8)
    save_image(tmp_path / "x.png", a)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "x.png")), a)
    save_image(tmp_path / "x.jpg", a)  # RGBA -> RGB for JPEG rather than an error
    assert Image.open(tmp_path / "x.jpg").mode == "RGB"


# ----------------------------------------------------------------------------- clean_alpha
def _avatar_like(size: int = 64) -> np.ndarray:
    """An opaque disc with an antialiased rim, like a rendered silhouette."""
    yy, xx = np.mgrid[:size, :size]
    r = np.hypot(yy - size / 2 + 0.5, xx - size / 2 + 0.5)
    img = np.zeros((size, size, 4), np.uint8)
    img[..., 0] = 200
    img[..., 1] = (xx * 4) % 256
    img[..., 3] = np.clip((size * 0.3 - r) * 255, 0, 255).astype(np.uint8)  # 1-px soft rim
    return img


def test_clean_alpha_removes_specks_and_makes_the_interior_opaque():
    from avatarforge.eval.alpha import opaque_interior_fraction, stray_alpha_pixels

    clean = _avatar_like()
    dirty = clean.copy()
    body = dirty[..., 3] == 255
    dirty[..., 3][body] = 250  # a generator's "almost opaque" body
    dirty[3, 3, 3], dirty[60, 5, 3], dirty[5, 58:60, 3] = 40, 200, 9  # specks, one of them solid
    assert stray_alpha_pixels(dirty)[0] == 4 and opaque_interior_fraction(dirty)[0] == 0.0
    out = clean_alpha(dirty)
    assert stray_alpha_pixels(out)[0] == 0
    assert opaque_interior_fraction(out)[0] == 1.0
    rim = (clean[..., 3] > 0) & (clean[..., 3] < 250)
    assert rim.sum() > 20 and np.array_equal(out[..., 3][rim], clean[..., 3][rim])  # soft edge kept
    assert np.array_equal(out[..., :3], dirty[..., :3])  # colours untouched
    # A clean silhouette is left as it is; RGB, batches and empty images pass through.
    assert np.array_equal(clean_alpha(clean), clean)
    assert np.array_equal(clean_alpha(clean[..., :3]), clean[..., :3])
    assert np.array_equal(clean_alpha(np.stack([dirty, clean]))[0], out)
    empty = np.zeros((8, 8, 4), np.uint8)
    assert np.array_equal(clean_alpha(empty), empty)


def test_clean_alpha_fills_small_holes_only():
    img = _avatar_like()
    img[30:32, 30:32, 3] = 0  # a 4-px hole inside the body: a generator's dropout
    img[30:32, 30:32, :3] = 0
    out = clean_alpha(img)
    assert (out[30:32, 30:32, 3] == 255).all()
    assert (out[30:32, 30:32, 0] > 150).all()  # its colour comes from around it (red 200)
    big = _avatar_like()
    big[24:40, 24:40, 3] = 0  # 256 px = 6% of the image: a real gap in the character, kept
    assert (clean_alpha(big)[24:40, 24:40, 3] == 0).all()
