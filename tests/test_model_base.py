import json

import pytest
import torch
from torch import nn

from avatarforge.models import ConfigModule, get_model_class, load_pretrained, register_model


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
    with pytest.raises(KeyError, match="unknown model"):
        load_pretrained(tmp_path)
