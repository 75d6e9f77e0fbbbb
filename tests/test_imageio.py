import numpy as np
import torch
from PIL import Image

from avatarforge.imageio import checkerboard, from_uint8, make_grid, save_image, to_uint8


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
