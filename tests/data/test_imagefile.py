"""Decoding and normalising single images (avatarforge.data.imagefile)."""

from __future__ import annotations

import io
import pickle

import numpy as np
import pytest
from PIL import Image

from avatarforge.data.imagefile import ImageRejected, load_image, normalize_image, parse_color
from tests.data.conftest import bomb_png, encode, noise, smooth, solid


def reason(src, **kw) -> str:
    with pytest.raises(ImageRejected) as ei:
        load_image(src, **kw)
    assert ei.value.message
    return ei.value.reason


# ----------------------------------------------------------------------------- parse_color


@pytest.mark.parametrize(
    "text, rgb",
    [
        ("#00ff00", (0, 255, 0)),
        ("#0F0", (0, 255, 0)),
        ("white", (255, 255, 255)),
        ("green", (0, 128, 0)),  # CSS green
        ("10, 20,30", (10, 20, 30)),
        (" Black ", (0, 0, 0)),
    ],
)
def test_parse_color(text, rgb):
    assert parse_color(text) == rgb


@pytest.mark.parametrize("bad", ["blurple", "#12345", "1,2", "1,2,300", "", "#gggggg"])
def test_parse_color_error_names_valid_forms(bad):
    with pytest.raises(ValueError, match=r"#rrggbb.*colour name.*r,g,b"):
        parse_color(bad)


# ----------------------------------------------------------------------------- load_image


def test_load_modes_become_rgb_or_rgba():
    cases = {
        "L": (solid(10, mode="L"), "RGB"),
        "1": (solid(1, mode="1"), "RGB"),
        "LA": (solid((10, 20), mode="LA"), "RGBA"),
        "P": (solid(0, mode="P"), "RGB"),
        "RGBA": (solid((1, 2, 3, 4), mode="RGBA"), "RGBA"),
        "CMYK": (solid((0, 0, 0, 0), mode="CMYK"), "RGB"),
    }
    for name, (img, want) in cases.items():
        fmt = "JPEG" if name == "CMYK" else "PNG"
        assert load_image(encode(img, fmt)).mode == want, name


def test_16bit_is_scaled_not_clipped():
    ramp = np.array([[0, 257, 32768, 65535]], np.uint16).repeat(4, 0)
    img = load_image(encode(Image.fromarray(ramp), "PNG"))
    got = np.asarray(img)[0, :, 0]
    assert got.tolist() == [0, 1, 128, 255]


def test_palette_transparency_becomes_alpha():
    pal = Image.new("P", (4, 4), 1)
    pal.putpalette([9, 9, 9, 200, 0, 0] + [0] * 762)
    pal.putpixel((0, 0), 0)
    img = load_image(encode(pal, "PNG", transparency=0))
    a = np.asarray(img)
    assert img.mode == "RGBA" and a[0, 0, 3] == 0 and (a[1:, :, 3] == 255).all()
    assert tuple(a[2, 2]) == (200, 0, 0, 255)


def test_exif_orientation_is_applied():
    stored = np.zeros((40, 60, 3), np.uint8)
    stored[:, 30:] = 255  # left black, right white as stored
    exif = Image.Exif()
    exif[0x0112] = 6
    img = load_image(encode(Image.fromarray(stored), "JPEG", quality=95, exif=exif.tobytes()))
    a = np.asarray(img).astype(int)
    assert img.size == (40, 60)  # portrait once rotated
    assert a[:25].mean() < 30 and a[35:].mean() > 225  # black moved to the top


def test_first_frame_of_animation():
    frames = [solid((255, 0, 0)), solid((0, 0, 255))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    assert tuple(np.asarray(load_image(data))[5, 5]) == (255, 0, 0)


def test_content_decides_not_name(tmp_path):
    p = tmp_path / "really_a_png.jpg"
    p.write_bytes(encode(solid((1, 2, 3)), "PNG"))
    assert load_image(p).format == "PNG"
    t = tmp_path / "note.png"
    t.write_text("hello\n" * 10)
    assert reason(t) == "not_an_image"


def test_rejections_from_bytes():
    png = encode(noise(0), "PNG")
    jpg = encode(noise(0), "JPEG")
    assert reason(b"") == "empty"
    assert reason(png[: len(png) // 2]) == "truncated"
    assert reason(jpg[: len(jpg) // 3]) == "truncated"
    assert reason(png[:30]) in ("truncated", "corrupt")
    assert reason(b"<html><body>404</body></html>") == "not_an_image"
    assert reason(np.random.default_rng(0).bytes(500)) == "not_an_image"
    assert reason(encode(solid((1, 2, 3)), "TGA")) == "unsupported_format"


def test_decompression_bomb():
    assert reason(bomb_png(10_000)) == "too_large"  # 100 MP > default 64 MP
    assert reason(encode(solid(0, size=(100, 100)), "PNG"), max_pixels=5_000) == "too_large"


def test_limit_above_pillows_own_is_honoured_and_global_restored(monkeypatch):
    # Pillow refuses images over 2x its process-wide MAX_IMAGE_PIXELS; lower that global so
    # a small image stands in for a huge one.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000_000)
    data = bomb_png(2_000)  # 4 MP > 2 x 1 MP
    with pytest.raises(Image.DecompressionBombError):
        Image.open(io.BytesIO(data))
    assert load_image(data, max_pixels=10_000_000).size == (2000, 2000)
    assert reason(data, max_pixels=3_000_000) == "too_large"
    assert Image.MAX_IMAGE_PIXELS == 1_000_000  # restored


def test_path_rejections(tmp_path):
    (tmp_path / "d.png").mkdir()
    assert reason(tmp_path / "d.png") == "is_directory"
    (tmp_path / "broken.png").symlink_to(tmp_path / "missing.png")
    assert reason(tmp_path / "broken.png") == "broken_symlink"
    (tmp_path / "loop.png").symlink_to(tmp_path / "loop.png")
    assert reason(tmp_path / "loop.png") == "broken_symlink"
    (tmp_path / "empty.jpg").write_bytes(b"")
    assert reason(tmp_path / "empty.jpg") == "empty"


def test_permission_denied_is_unreadable(tmp_path, monkeypatch):
    import avatarforge.data.imagefile as imagefile

    p = tmp_path / "locked.png"
    p.write_bytes(encode(solid((1, 2, 3)), "PNG"))

    # Tests run as root, for whom chmod 000 changes nothing: simulate the kernel's answer.
    def denied(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(imagefile, "open", denied, raising=False)
    assert reason(p) == "unreadable"


def test_rejected_pickles():
    e = pickle.loads(pickle.dumps(ImageRejected("too_small", "8x8")))
    assert (e.reason, e.message) == ("too_small", "8x8")


# ----------------------------------------------------------------------------- normalize


def test_crop_keep_alpha_shapes_and_opaque_alpha():
    img = load_image(encode(smooth(0, 96), "PNG"))
    out = normalize_image(img, 32)
    assert out.shape == (32, 32, 4) and out.dtype == np.uint8 and (out[..., 3] == 255).all()
    out3 = normalize_image(img, 32, alpha="white")
    assert out3.shape == (32, 32, 3)
    assert np.abs(out3.astype(int) - out[..., :3]).max() == 0


def test_premultiplied_resize_does_not_bleed():
    a = np.zeros((64, 64, 4), np.uint8)
    a[:, :32] = (255, 0, 0, 255)
    a[:, 32:] = (0, 255, 0, 0)  # invisible green
    out = normalize_image(Image.fromarray(a, "RGBA"), 24)
    vis = out[..., 3] > 0
    assert (out[vis][:, 1] == 0).all()  # no green anywhere visible
    assert (out[~vis][:, :3] == 0).all()  # transparent pixels are stored as 0
    assert (out[:, :10, :3] == (255, 0, 0)).all() and out[:, :10, 3].min() >= 250  # LANCZOS rings a little
    comp = normalize_image(Image.fromarray(a, "RGBA"), 24, alpha="white", background=(255, 255, 255))
    assert comp[:, 14:].min() >= 250 and comp[:, :10, 1].max() <= 2


def test_pad_portrait():
    portrait = solid((0, 0, 255), size=(20, 40))
    out = normalize_image(portrait, 32, fit="pad")
    assert (out[:, :8, 3] == 0).all() and (out[:, 24:, 3] == 0).all()  # transparent sides
    assert (out[:, 8:24] == (0, 0, 255, 255)).all()
    rgb = normalize_image(portrait, 32, fit="pad", alpha="green", background=(0, 128, 0))
    assert (rgb[:, :8] == (0, 128, 0)).all() and (rgb[:, 8:24] == (0, 0, 255)).all()


def test_crop_takes_the_centre():
    a = np.zeros((80, 40, 3), np.uint8)
    a[:20] = (255, 0, 0)
    a[20:60] = (0, 255, 0)
    a[60:] = (0, 0, 255)
    out = normalize_image(Image.fromarray(a), 16, alpha="white")
    assert (out == (0, 255, 0)).all()


def test_min_side_uses_original_size_even_after_jpeg_draft():
    data = encode(smooth(3, 800), "JPEG", quality=90)
    img = load_image(data, draft_size=64)
    assert max(img.size) < 800  # the decoder really did shrink it
    out = normalize_image(img, 64, min_side=700)  # but the real image is 800 px: kept
    assert out.shape == (64, 64, 4)
    with pytest.raises(ImageRejected) as ei:
        normalize_image(load_image(encode(solid(0, size=(30, 50)), "PNG")), 64)
    assert ei.value.reason == "too_small" and "30x50" in ei.value.message
    assert normalize_image(load_image(encode(solid(0, size=(30, 50)), "PNG")), 64, min_side=0).shape[0] == 64


def test_downscale_antialiases():
    # A 1-px checkerboard must average to grey, not alias into stripes or moire.
    board = ((np.indices((512, 512)).sum(0) % 2) * 255).astype(np.uint8)
    out = normalize_image(Image.fromarray(board, "L"), 32, alpha="white").astype(int)
    assert abs(out.mean() - 127.5) < 3 and out.std() < 3


def test_bad_options():
    img = solid(0)
    with pytest.raises(ValueError, match="fit must be one of crop, pad"):
        normalize_image(img, 32, fit="stretch")
    with pytest.raises(ValueError, match="size"):
        normalize_image(img, 0)


def test_alpha_colour_string_composites_onto_it():
    a = np.zeros((20, 20, 4), np.uint8)
    a[:, :10] = (255, 0, 0, 255)  # right half transparent
    out = normalize_image(Image.fromarray(a, "RGBA"), 20, alpha="#0000ff")
    assert out.shape == (20, 20, 3)
    assert (out[:, 12:] == (0, 0, 255)).all() and (out[:, :8] == (255, 0, 0)).all()
    with pytest.raises(ValueError, match="alpha must be"):
        normalize_image(Image.fromarray(a, "RGBA"), 20, alpha="blurple")
