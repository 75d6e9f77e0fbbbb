import json

import pytest
import torch
from torch import nn

from avatarforge.models import ConfigModule, get_model_class, load_pretrained, register_model
from avatarforge.models.base import ModelFileError, UnknownModelError, read_safetensors_header


@register_model("test-base-toy", role="generator")
class Toy(ConfigModule):
    def __init__(self, width: int = 3, sizes: tuple = (1, 2), name: str = "a"):
        super().__init__()
        self.lin = nn.Linear(width, width)
        self.register_buffer("avg", torch.zeros(width))


@register_model("test-base-toy2", role="generator")
class Toy2(Toy):
    def __init__(self, width: int = 4, extra: float = 0.5):
        super().__init__(width=width)


def test_config_captures_outermost_constructor_arguments():
    assert Toy(5).config == {"width": 5, "sizes": [1, 2], "name": "a"}
    assert Toy2(6).config == {"width": 6, "extra": 0.5}


def test_save_load_round_trip_identical(tmp_path):
    m = Toy2(4)
    m.avg.fill_(3.0)
    m.save_pretrained(tmp_path, prefix="g_")
    meta = json.loads((tmp_path / "g_config.json").read_text())
    assert meta["model"] == "test-base-toy2" and meta["config"] == {"width": 4, "extra": 0.5}
    loaded = load_pretrained(tmp_path, prefix="g_")
    assert type(loaded) is Toy2
    x = torch.randn(2, 4)
    assert torch.equal(loaded.lin(x), m.lin(x)) and torch.equal(loaded.avg, m.avg)
    assert isinstance(Toy2.from_pretrained(tmp_path, prefix="g_"), Toy2)
    with pytest.raises(TypeError):
        nn_other = type("Other", (ConfigModule,), {})
        nn_other.from_pretrained(tmp_path, prefix="g_")


def test_unknown_model_error_lists_choices():
    with pytest.raises(KeyError, match="available"):
        get_model_class("no-such-model")


def test_config_rejects_non_json_values():
    with pytest.raises(TypeError, match="JSON"):
        Toy(3, sizes=object())


def test_checkpoint_names_class_by_registry_not_import_path(tmp_path):
    Toy(3).save_pretrained(tmp_path)
    meta = json.loads((tmp_path / "config.json").read_text())
    meta["model"] = "os.system"  # a crafted file cannot make us import or call arbitrary things
    (tmp_path / "config.json").write_text(json.dumps(meta))
    with pytest.raises(KeyError, match="unknown model") as err:
        load_pretrained(tmp_path)
    # Also a one-line ModelFileError naming the file, unquoted (KeyError would quote it).
    assert isinstance(err.value, UnknownModelError) and isinstance(err.value, ValueError)
    assert str(err.value).startswith(f"{tmp_path / 'config.json'}: unknown model 'os.system'")


# ----------------------------------------------------------------------------- untrusted files
def _real_device() -> bool:
    return torch.empty(0).device.type != "meta"


@register_model("test-base-big", role="generator")
class Big(ConfigModule):
    """A model whose size follows its config; refuses to be built big for real, so a test
    fails (instead of allocating gigabytes) if loading builds it before checking the file."""

    def __init__(self, width: int = 3, scratch: int = 0, required: int = 1):
        super().__init__()
        if _real_device() and (width > 4096 or scratch > 4096):
            raise AssertionError("a huge model was built on a real device before its file was checked")
        self.lin = nn.Linear(width, width)
        self.register_buffer("scratch", torch.zeros(scratch), persistent=False)  # not in the file


@register_model("test-base-needs", role="generator")
class Needs(ConfigModule):
    def __init__(self, width: int, sizes: list[int] | None = None, mode: str = "a"):
        super().__init__()
        if mode not in ("a", "b"):
            raise ValueError(f"mode must be a or b, got {mode!r}")
        self.lin = nn.Linear(width, width)


def _edit_config(path, **changes):
    meta = json.loads(path.read_text())
    meta["config"].update(changes)
    path.write_text(json.dumps(meta))


def _one_line_error(directory, match: str, prefix: str = "") -> ModelFileError:
    with pytest.raises(ModelFileError, match=match) as err:
        load_pretrained(directory, prefix=prefix)
    assert "\n" not in str(err.value) and str(directory) in str(err.value)
    return err.value


def test_saved_config_records_the_weights_checksum(tmp_path):
    import hashlib

    Toy(3).save_pretrained(tmp_path, prefix="g_")
    record = json.loads((tmp_path / "g_config.json").read_text())["weights"]
    data = (tmp_path / "g_model.safetensors").read_bytes()
    assert record == {
        "file": "g_model.safetensors",
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }


def test_huge_config_is_rejected_before_anything_is_allocated(tmp_path):
    """The issue's w_dim=z_dim=100000: a 40 GB network. Shapes come from the meta device and
    the file's header; nothing is built for real."""
    Big(3).save_pretrained(tmp_path)
    _edit_config(tmp_path / "config.json", width=100_000)
    err = _one_line_error(
        tmp_path,
        r"model\.safetensors: tensor 'lin\.weight' has shape \[3, 3\], the model in config\.json \[100000, 100000\]",
    )
    assert str(err).startswith(str(tmp_path / "model.safetensors"))
    # A buffer kept out of the file cannot smuggle an allocation past the shape check.
    Big(3).save_pretrained(tmp_path)
    _edit_config(tmp_path / "config.json", scratch=10**10)
    _one_line_error(tmp_path, r"config\.json: the model it describes needs 37\.3 GiB, .*refusing to build it")


def test_constructor_arguments_are_checked_against_the_signature(tmp_path):
    Needs(4).save_pretrained(tmp_path)
    cfg = tmp_path / "config.json"
    _edit_config(cfg, evil="__import__('os')")
    _one_line_error(
        tmp_path, r"config\.json: 'test-base-needs' takes no argument 'evil' \(it takes: width, sizes, mode\)"
    )
    Needs(4).save_pretrained(tmp_path)
    meta = json.loads(cfg.read_text())
    del meta["config"]["width"]
    cfg.write_text(json.dumps(meta))
    _one_line_error(tmp_path, r"needs argument 'width', which the config lacks")
    for bad, expected in ((True, "int"), ("4", "int"), (4.0, "int"), (None, "int")):
        Needs(4).save_pretrained(tmp_path)
        _edit_config(cfg, width=bad)
        _one_line_error(tmp_path, rf"argument 'width' of 'test-base-needs' must be {expected}, got")
    Needs(4).save_pretrained(tmp_path)
    _edit_config(cfg, sizes=[1, "2"])
    _one_line_error(tmp_path, r"argument 'sizes' .* must be")
    Needs(4).save_pretrained(tmp_path)
    _edit_config(cfg, mode="c")  # right type, rejected by the constructor itself
    _one_line_error(
        tmp_path, r"config\.json: does not build a 'test-base-needs' model \(ValueError: mode must be a or b"
    )
    Needs(4).save_pretrained(tmp_path)
    _edit_config(cfg, sizes=[1, 2], mode="b")
    assert load_pretrained(tmp_path).config == {"width": 4, "sizes": [1, 2], "mode": "b"}


def test_malformed_config_files_are_one_line_errors(tmp_path):
    Toy(3).save_pretrained(tmp_path)
    cfg = tmp_path / "config.json"
    good = cfg.read_text()
    cfg.write_text(good[: len(good) // 2])
    _one_line_error(tmp_path, r"config\.json: not valid JSON \(")
    cfg.write_bytes(b"\xff\xfe")
    _one_line_error(tmp_path, r"config\.json: not valid JSON")
    for doc in ([], {"config": {}}, {"model": "test-base-toy", "config": [1]}, {"model": 3, "config": {}}):
        cfg.write_text(json.dumps(doc))
        _one_line_error(tmp_path, r"config\.json: not a model config")
    meta = json.loads(good)
    meta["weights"]["sha256"] = "xyz"
    cfg.write_text(json.dumps(meta))
    _one_line_error(tmp_path, r"config\.json: damaged 'weights' record")


def test_damaged_weights_are_one_line_errors_naming_the_file(tmp_path):
    m = Toy(3)
    m.save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(good[:-7])
    _one_line_error(
        tmp_path, r"model\.safetensors: \d+ bytes, but config\.json records \d+ \(truncated or replaced\)"
    )
    flipped = bytearray(good)
    flipped[-3] ^= 0x10
    weights.write_bytes(bytes(flipped))
    _one_line_error(tmp_path, r"model\.safetensors: sha256 differs from the one config\.json records")
    # Pickle bytes under a .safetensors name (what torch.save would write): never unpickled;
    # the size recorded in the config rejects it, and without a record the header parser does.
    import io
    import pickle

    buf = io.BytesIO()
    pickle.dump({"lin.weight": [[0.0]] * 64}, buf, protocol=4)
    weights.write_bytes(buf.getvalue())
    _one_line_error(tmp_path, r"model\.safetensors: \d+ bytes, but config\.json records")
    meta = json.loads((tmp_path / "config.json").read_text())
    del meta["weights"]
    (tmp_path / "config.json").write_text(json.dumps(meta))
    _one_line_error(
        tmp_path, r"model\.safetensors: not a safetensors file, or truncated \(its first 8 bytes give"
    )
    weights.unlink()
    _one_line_error(tmp_path, r"model\.safetensors: missing \(the weights that config\.json describes\)")


def test_files_without_a_weights_record_still_load_and_are_checked_by_parsing(tmp_path):
    """Models saved before the checksum existed load as before; truncation is still caught."""
    m = Toy(3)
    m.save_pretrained(tmp_path)
    cfg = tmp_path / "config.json"
    meta = json.loads(cfg.read_text())
    del meta["weights"]
    cfg.write_text(json.dumps(meta))
    assert torch.equal(load_pretrained(tmp_path).lin.weight, m.lin.weight)
    weights = tmp_path / "model.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(good[:-7])
    _one_line_error(tmp_path, r"model\.safetensors: truncated: the header describes \d+ bytes of tensor data")
    weights.write_bytes(good + b"junk")
    _one_line_error(tmp_path, r"model\.safetensors: trailing bytes")
    weights.write_bytes(good[:5])
    _one_line_error(tmp_path, r"model\.safetensors: not a safetensors file \(5 bytes")


def test_weights_of_another_model_are_rejected_by_name(tmp_path):
    from safetensors.torch import save_file

    Toy(3).save_pretrained(tmp_path / "a")

    save_file({"other.weight": torch.zeros(3, 3)}, str(tmp_path / "a" / "model.safetensors"))
    meta = json.loads((tmp_path / "a" / "config.json").read_text())
    del meta["weights"]
    (tmp_path / "a" / "config.json").write_text(json.dumps(meta))
    _one_line_error(
        tmp_path / "a",
        r"model\.safetensors: lacks tensor '[a-z.]+' \(and 2 more\) that the model in config\.json has",
    )


def test_safetensors_header_reader(tmp_path):
    from safetensors.torch import save_file

    save_file(
        {"a": torch.zeros(2, 3), "b": torch.ones(4, dtype=torch.int64)}, str(tmp_path / "x.safetensors")
    )
    header = read_safetensors_header(tmp_path / "x.safetensors")
    assert {k: (v.dtype, v.shape) for k, v in header.items()} == {"a": ("F32", (2, 3)), "b": ("I64", (4,))}
    # Shapes that do not match their byte ranges are damage, even if the sizes add up.
    import struct

    raw = (tmp_path / "x.safetensors").read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    doc = json.loads(raw[8 : 8 + n])
    doc["a"]["shape"] = [3, 2, 1000]
    text = json.dumps(doc).encode()
    (tmp_path / "y.safetensors").write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n :])
    with pytest.raises(ModelFileError, match=r"y\.safetensors: damaged safetensors header \(tensor 'a'"):
        read_safetensors_header(tmp_path / "y.safetensors")
