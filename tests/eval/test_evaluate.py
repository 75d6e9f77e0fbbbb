"""The evaluate() API end to end, attribute accuracy, reconstruction and the training hook."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from avatarforge.data import procedural as P
from avatarforge.data.dataset import PackedDataset
from avatarforge.eval.evaluate import EvalResult, evaluate, make_metric_fn, metric_key
from avatarforge.eval.sources import SourceError
from avatarforge.models.dcgan import DCGANGenerator
from tests.conftest import make_packed

# Outcome depends on trained weights / float rounding: rerun by `make test-numerics-fp32`.
pytestmark = pytest.mark.numerics


@pytest.fixture(scope="module")
def blobs(tmp_path_factory):
    d = tmp_path_factory.mktemp("blobs")
    return make_packed(d / "a", n=40, size=32, seed=0), make_packed(d / "b", n=40, size=32, seed=1)


def test_metric_key_naming():
    assert metric_key("fid", "inception") == "fid"
    assert metric_key("fid", "avatar") == "fid_avatar"
    assert metric_key("kid_std", "avatar") == "kid_avatar_std"
    assert metric_key("precision", None) == "precision"


def test_evaluate_data_sets_json_and_cache(blobs, tmp_path):
    a, b = blobs
    out = tmp_path / "r" / "results.json"
    cache = tmp_path / "cache"
    r = evaluate(a, b, metrics="fid,kid,pr,swd", extractor="tiny", device="cpu", out=out, cache_dir=cache)
    assert isinstance(r, EvalResult)
    assert set(r.metrics) == {
        "fid_tiny", "kid_tiny", "kid_tiny_std", "precision_tiny", "recall_tiny", "swd", "swd_32", "swd_16",
    }  # fmt: skip
    assert r.metrics["fid_tiny"] > 0 and r.metrics["swd"] > 0
    data = json.loads(out.read_text())
    assert data["format"] == "avatarforge-eval" and data["metrics"] == pytest.approx(r.metrics)
    s = data["settings"]
    assert s["extractor"]["name"] == "tiny" and s["n"] == 40 and s["n_ref"] == 40 and s["seed"] == 0
    assert (
        data["reference"]["content_hash"] == r.reference["content_hash"]
        and len(data["reference"]["content_hash"]) == 64
    )
    assert data["reference"]["features_cache"]["hit"] is False
    assert {"avatarforge", "torch", "numpy", "scipy"} <= set(data["versions"])
    assert any("biased" in n for n in data["notes"])
    summary = r.summary()
    assert "fid_tiny" in summary and str(b) in summary
    # Second run: reference features come from the cache, same numbers.
    r2 = evaluate(a, b, metrics="fid,kid,pr,swd", extractor="tiny", device="cpu", cache_dir=cache)
    assert r2.reference["features_cache"]["hit"] is True
    assert r2.metrics == pytest.approx(r.metrics)
    assert len(list((cache / "stats").glob("*.npz"))) == 2  # both data sets have content hashes
    r3 = evaluate(a, b, metrics="fid", extractor="tiny", device="cpu", cache_dir=cache, use_cache=False)
    assert r3.reference.get("features_cache") is None and r3.metrics["fid_tiny"] == pytest.approx(
        r.metrics["fid_tiny"]
    )


def test_identical_sets(blobs, avatar_extractor, tmp_path):
    from avatarforge.imageio import save_image

    a, _ = blobs
    r = evaluate(a, a, metrics="fid,kid,pr,swd", extractor=avatar_extractor, device="cpu")
    m = r.metrics
    assert abs(m["fid_avatar"]) < 1e-3
    assert m["precision_avatar"] == 1.0 and m["recall_avatar"] == 1.0
    assert m["swd"] == 0.0
    # The unbiased KID of a set with itself is slightly negative at 40 images (self-pairs are
    # excluded within a set but not across): small next to the distance to other images.
    for i in range(40):
        save_image(tmp_path / f"{i:02d}.png", P.render(P.sample_attributes(i), 32, background=True))
    other = evaluate(tmp_path, a, metrics="kid,fid", extractor=avatar_extractor, device="cpu").metrics
    assert abs(m["kid_avatar"]) < 0.1 * other["kid_avatar"]
    assert other["fid_avatar"] > 100 * abs(m["fid_avatar"])


def test_generator_source_vs_data(blobs, tmp_path):
    a, _ = blobs
    torch.manual_seed(0)
    G = DCGANGenerator(resolution=32, z_dim=16, base_channels=8)
    G.save_pretrained(tmp_path / "run", prefix="g_ema_")
    r = evaluate(tmp_path / "run", a, metrics=["fid", "swd"], extractor="tiny", n=16, seed=3, device="cpu")
    assert r.source["kind"] == "generator" and r.source["images"] == 16 and r.settings["n"] == 16
    assert r.source["seed"] == 3 and r.source["content_hash"] is None
    assert all(math.isfinite(v) for v in r.metrics.values())
    # The module itself works as a source too, with the same samples for the same seed.
    r2 = evaluate(G, a, metrics=["fid", "swd"], extractor="tiny", n=16, seed=3, device="cpu")
    assert r2.metrics == pytest.approx(r.metrics)
    # Different resolutions: SWD resizes the source to the reference's size (and says so).
    G64 = DCGANGenerator(resolution=64, z_dim=16, base_channels=8)
    r3 = evaluate(G64, a, metrics="swd", n=4, n_ref=8, device="cpu")
    assert set(r3.metrics) == {"swd", "swd_32", "swd_16"} and any("resized" in n for n in r3.notes)


def test_errors(blobs):
    a, _ = blobs
    with pytest.raises(SourceError, match="reference"):
        evaluate(a, None, metrics="fid", extractor="tiny", device="cpu")
    with pytest.raises(KeyError, match="available"):
        evaluate(a, a, metrics="fid,nope", extractor="tiny", device="cpu")
    with pytest.raises(KeyError, match="avatar"):
        evaluate(a, a, metrics="fid", extractor="clip", device="cpu")
    with pytest.raises(SourceError, match="conditional generator"):
        evaluate(a, None, metrics="attr", device="cpu")


# ----------------------------------------------------------------------------- attribute accuracy
class ProceduralGenerator(nn.Module):
    """A 'generator' conditioned on one label (hair_color) that draws procedural avatars.

    ``faithful=False`` ignores the requested label (a model that learned nothing about it);
    ``blink_odd`` closes the eyes of every avatar drawn from an odd seed.
    """

    resolution, channels, z_dim = 64, 3, 4

    def __init__(self, faithful: bool = True, label: str = "hair_color", blink_odd: bool = False) -> None:
        super().__init__()
        self.code_dims = {"categorical": [], "continuous": 0}
        self.label = label
        self.label_dims = [P.SCHEMA[label].num_classes]
        self.faithful = faithful
        self.blink_odd = blink_odd
        self.dummy = nn.Parameter(torch.zeros(1))

    def sample_z(self, n, generator=None, device=None):
        return torch.randint(0, 10**6, (n, 1), generator=generator).float().repeat(1, 4)

    def forward(self, z, labels=None, codes=None, truncation_psi=1.0):
        out = []
        for seed, lab in zip(z[:, 0].long().tolist(), labels[:, 0].tolist()):
            value = lab if self.faithful else (seed % self.label_dims[0])
            eye_open = 0.0 if self.blink_odd and seed % 2 else 1.0
            attrs = P.sample_attributes(seed, **{self.label: int(value)}, eye_open=eye_open)
            img = P.render(attrs, 64, background=True)
            out.append(torch.from_numpy(img).permute(2, 0, 1).float() / 127.5 - 1)
        return torch.stack(out)


def test_attribute_accuracy(avatar_extractor):
    kw = {"metrics": "attr", "label_names": ["hair_color"], "extractor": avatar_extractor, "device": "cpu"}
    good = evaluate(ProceduralGenerator(), None, n=48, **kw)
    assert good.metrics["attr_acc_hair_color"] >= 0.9
    assert good.metrics["attr_acc"] == good.metrics["attr_acc_hair_color"]
    assert good.settings["attribute_net"]["name"] == "avatar"
    bad = evaluate(ProceduralGenerator(False), None, n=48, **kw)
    assert bad.metrics["attr_acc_hair_color"] < 0.4
    # Labels the avatar net does not know are skipped with a note; none known is an error.
    with pytest.raises(SourceError, match="none of the labels"):
        evaluate(ProceduralGenerator(), None, n=4, **{**kw, "label_names": ["mood"]})


def test_eye_colour_is_judged_only_where_the_eyes_are_open(avatar_extractor, record_number):
    # A closed eye hides the iris: avatars that blink are left out of the eye-colour score
    # (with a note saying how many), so a faithful generator still scores near 1.
    kw = {"metrics": "attr", "label_names": ["eye_color"], "extractor": avatar_extractor, "device": "cpu"}
    res = evaluate(ProceduralGenerator(label="eye_color", blink_odd=True), None, n=96, **kw)
    record_number("eye_color_accuracy_eyes_open", res.metrics["attr_acc_eye_color"])
    # measured 0.87-0.91 over bf16/fp32 x classifier seeds 0-1 (an earlier >= 0.9 on 48 images
    # failed at seed 1); chance is 0.11, and the unfaithful generator below scored 0.09-0.12.
    assert res.metrics["attr_acc_eye_color"] >= 0.75
    (note,) = [n for n in res.notes if "eye_color not judged" in n]
    hidden = int(note.split(" on ")[1].split()[0])
    assert 24 <= hidden <= 72  # about half of 96 seeds are odd
    bad = evaluate(ProceduralGenerator(False, label="eye_color"), None, n=96, **kw)
    record_number("eye_color_accuracy_unfaithful", bad.metrics["attr_acc_eye_color"])
    assert bad.metrics["attr_acc_eye_color"] < 0.4


# ----------------------------------------------------------------------------- reconstruction
class IdentityVAE(nn.Module):
    channels, label_dims = 3, []

    def __init__(self) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))

    def encode(self, x, labels=None):
        return x.flatten(1), x.flatten(1)

    def decode(self, z, labels=None):
        return z.view(-1, 3, 32, 32)


def test_reconstruction_metrics(blobs, tmp_path):
    from avatarforge.eval.evaluate import Evaluator
    from avatarforge.eval.sources import open_source
    from avatarforge.models.vae import VAE

    a, _ = blobs
    ev = Evaluator(a, metrics=["recon"], device="cpu")
    src = open_source(a)
    perfect, _ = ev.run(src, model=IdentityVAE())
    assert perfect["mse"] == 0.0 and math.isinf(perfect["psnr"]) and perfect["ssim"] == pytest.approx(1.0)
    res = EvalResult(metrics=perfect)
    assert res.to_json()["metrics"]["psnr"] is None  # strict JSON: inf -> null
    torch.manual_seed(0)
    vae = VAE(resolution=32, z_dim=8, base_channels=8)
    real, _ = ev.run(src, model=vae)
    assert real["mse"] > 0 and math.isfinite(real["psnr"]) and -1 <= real["ssim"] < 1
    # A VAE run directory: `recon` finds the VAE through the source.
    vae.save_pretrained(tmp_path / "vaerun", prefix="vae_")
    r = evaluate(tmp_path / "vaerun", a, metrics="recon,swd", n=8, device="cpu")
    assert r.metrics["mse"] == pytest.approx(real["mse"], rel=1e-5) and "swd" in r.metrics


def test_registry_entries_compute_the_model_metrics(blobs, avatar_extractor):
    """``attr`` and ``recon`` in the metric registry compute their metric (the Evaluator only
    gathers their inputs): called directly they give what evaluate() gives."""
    from avatarforge.eval.metrics import get_metric
    from avatarforge.eval.sources import open_source

    a, _ = blobs
    recon = get_metric("recon").compute(IdentityVAE(), open_source(a), batch_size=8)
    assert recon["mse"] == 0.0 and recon["ssim"] == pytest.approx(1.0)
    attr = get_metric("attr").compute(
        open_source(ProceduralGenerator(), n=24), avatar=avatar_extractor, label_names=["hair_color"]
    )
    kw = {"metrics": "attr", "label_names": ["hair_color"], "extractor": avatar_extractor, "device": "cpu"}
    assert attr == pytest.approx(evaluate(ProceduralGenerator(), None, n=24, **kw).metrics)
    # The avatar net (which may have to be trained) is built only once the source passes.
    with pytest.raises(SourceError, match="needs a conditional generator"):
        get_metric("attr").compute(open_source(a), avatar=lambda: pytest.fail("built the avatar net"))
    with pytest.raises(SourceError, match="needs a VAE"):
        get_metric("recon").compute(None, open_source(a))


# ----------------------------------------------------------------------------- training hook
def test_make_metric_fn_with_a_trainer_like_object(blobs, monkeypatch):
    a, b = blobs
    torch.manual_seed(0)
    G = DCGANGenerator(resolution=32, z_dim=16, base_channels=8)
    trainer = SimpleNamespace(G_ema=G, device=torch.device("cpu"), dataset=PackedDataset(a), label_names=[])
    fn = make_metric_fn(metrics=("swd", "fid"), num_images=16, extractor="tiny")
    first = fn(trainer)
    assert set(first) == {"swd", "swd_32", "swd_16", "fid_tiny"}

    # The reference is prepared once and reused; unchanged weights give the same numbers.
    calls = []
    from avatarforge.eval.evaluate import Evaluator

    orig = Evaluator._scan
    monkeypatch.setattr(
        Evaluator, "_scan", lambda self, src, **kw: calls.append(src.kind) or orig(self, src, **kw)
    )
    assert fn(trainer) == pytest.approx(first)
    assert calls == ["generator"]
    # Explicit reference and a VAE trainer (model.decoder is sampled).
    from avatarforge.models.vae import VAE

    vae = VAE(resolution=32, z_dim=8, base_channels=8)
    vae_trainer = SimpleNamespace(
        model=vae, device=torch.device("cpu"), dataset=PackedDataset(a), label_names=[]
    )
    out = make_metric_fn(b, metrics="swd,recon", num_images=8)(vae_trainer)
    assert {"swd", "mse", "psnr", "ssim"} <= set(out)


def test_metric_fn_in_a_real_training_run(tmp_path):
    """GANTrainer calls the hook, logs its numbers and keeps checkpoints/best/ by swd."""
    from avatarforge.config import build_train_config
    from avatarforge.train.gan import GANTrainer
    from avatarforge.train.metrics_log import read_metrics

    data = make_packed(tmp_path / "blobs", n=16, size=32)
    cfg = build_train_config(
        cli={"model": {"name": "dcgan"}, "data": {"path": str(data)}},
        overrides=[
            "batch_size=8", f"runs_dir={tmp_path / 'runs'}", "kimg=0.032", "model.kwargs.base_channels=8",
            "log.progress=false", "perf.num_threads=1", "log.num_samples=4", "log.sample_every_kimg=0",
            "log.checkpoint_every_kimg=0", "log.metric_every_kimg=0.016", "log.best_metric=swd",
        ],
    )  # fmt: skip
    run = GANTrainer(cfg, metric_fn=make_metric_fn(metrics="swd", num_images=16)).fit()
    rows = read_metrics(run, kind="metric")
    assert len(rows) >= 2 and all({"swd", "swd_32", "swd_16"} <= set(r) for r in rows)
    assert (run / "checkpoints" / "best").is_dir()
