"""Feature networks for neural style transfer: VGG-19 from a user file, or a seeded random CNN.

Both networks take torch images ``(B, 3, H, W)`` in ``[-1, 1]`` (the project convention) and
return a dict of named activations; the names are VGG's, so the losses in
:mod:`avatarforge.style.neural` never care which network they got:

=========  ===================  ==============================================
layer      downsampling         used for
=========  ===================  ==============================================
relu1_1    1                    style (Gram / mean-std), AdaIN decoder loss
relu2_1    2                    style
relu3_1    4                    style
relu4_1    8                    style; the AdaIN bottleneck
relu4_2    8                    content (Gatys)
=========  ===================  ==============================================

* :class:`VGG19Features` is torchvision's ``vgg19().features`` rebuilt in plain torch with the
  same module indices (``features.0.weight`` ... ``features.34.bias``), so a torchvision
  state dict loads as is. AvatarForge ships no weights and never downloads any: the user
  names a file (``--vgg PATH``) holding the torchvision ``vgg19`` state dict (e.g. the
  ``vgg19-dcbb9e9d.pth`` that ``torchvision.models.vgg19(weights="IMAGENET1K_V1")`` caches,
  or the same tensors as ``.safetensors``). ``.pth`` files are read with
  ``torch.load(weights_only=True)``, which refuses anything but tensors and plain
  containers: a weights file can never run code. Inputs are normalised with the ImageNet
  mean/std the weights were trained with.
* :class:`RandomMultiScaleCNN` is the weight-free fallback. Texture statistics (Gram
  matrices) of random convolutional features are a known substitute for trained ones
  (Ustyuzhaninov et al. 2016, "Texture synthesis using shallow convolutional networks with
  random filters"; He et al. 2016, "A powerful generative model using random weights for
  the deep image representation"). The network is a four-level image pyramid: level ``k``
  sees the average-pooled features of level ``k - 1`` *and* the image itself downsampled by
  ``2^(k-1)``, so every level has direct, shallow access to colour at its scale (the
  multi-scale single-layer design of Ustyuzhaninov et al.) as well as deeper combinations.
  Weights come from a seeded ``torch.Generator``: the same seed gives the same network on
  every machine and run. Expect colour and texture transfer to work; semantic content
  preservation (faces staying faces under heavy style weights) is weaker than with VGG,
  because random features do not encode object parts.
"""

from __future__ import annotations

import copy
import hashlib
import os
import pickle
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "CONTENT_LAYER",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "STYLE_LAYERS",
    "VGG19_CFG",
    "VGG19_LAYER_INDEX",
    "FeatureNet",
    "RandomMultiScaleCNN",
    "VGG19Features",
    "build_vgg19_features",
    "load_feature_net",
    "load_vgg19",
    "read_state_dict",
]

#: torchvision's configuration "E" (VGG-19): conv widths, "M" = 2x2 max pooling.
VGG19_CFG: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M",
)  # fmt: skip

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
STYLE_LAYERS: tuple[str, ...] = ("relu1_1", "relu2_1", "relu3_1", "relu4_1")
CONTENT_LAYER = "relu4_2"
ADAIN_LAYER = "relu4_1"


def _vgg19_layer_index() -> dict[str, int]:
    """``{"relu1_1": 1, "relu1_2": 3, "relu2_1": 6, ..., "relu5_4": 35}`` (indices into ``features``)."""
    out: dict[str, int] = {}
    idx, block, conv = 0, 1, 0
    for v in VGG19_CFG:
        if v == "M":
            idx += 1
            block, conv = block + 1, 0
        else:
            conv += 1
            out[f"relu{block}_{conv}"] = idx + 1  # the ReLU right after the conv
            idx += 2
    return out


#: VGG-19 layer name -> index of its ReLU in ``features``.
VGG19_LAYER_INDEX: dict[str, int] = _vgg19_layer_index()


def build_vgg19_features() -> nn.Sequential:
    """torchvision's ``vgg19().features`` (37 modules, indices 0..36), randomly initialised."""
    layers: list[nn.Module] = []
    c_in = 3
    for v in VGG19_CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(c_in, int(v), kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            c_in = int(v)
    return nn.Sequential(*layers)


# ----------------------------------------------------------------------------- the interface
class FeatureNet(nn.Module):
    """A frozen feature extractor with VGG-style layer names.

    Attributes:
        kind: ``"vgg19"`` or ``"random"``.
        layer_names: the layers :meth:`forward` can return.
        channels: layer -> number of channels.
        scales: layer -> downsampling factor from the input.
        multiple: input sides should be multiples of this (every layer's grid is then exact).
    """

    kind: str = ""
    layer_names: tuple[str, ...] = ()
    channels: dict[str, int]
    scales: dict[str, int]
    multiple: int = 8

    def describe(self) -> str:
        """A short description for messages and decoder configs (``"vgg19"``, ``"random(seed=0)"``)."""
        return self.kind

    def fingerprint(self) -> str:
        """16 hex digits of SHA-256 over every parameter: identifies the exact weights.

        An AdaIN decoder stores its encoder's fingerprint, so pairing it with different
        weights (another VGG file, another seed) is caught instead of producing mush.
        """
        h = hashlib.sha256()
        for name, t in sorted(self.state_dict().items()):
            h.update(name.encode())
            h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
        return h.hexdigest()[:16]

    def check_layers(self, layers: Iterable[str]) -> list[str]:
        """The requested layer names, validated against :attr:`layer_names`."""
        names = list(layers)
        bad = [n for n in names if n not in self.layer_names]
        if bad:
            raise ValueError(
                f"unknown layer(s) {bad} for the {self.kind} network; available: {', '.join(self.layer_names)}"
            )
        return names

    def forward(self, x: Tensor, layers: Iterable[str]) -> dict[str, Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError


# ----------------------------------------------------------------------------- VGG-19
class VGG19Features(FeatureNet):
    """VGG-19's convolutional part with torchvision's module indices and ImageNet normalisation.

    ``state_dict()`` keys are ``features.0.weight`` ... ``features.34.bias``, exactly those of
    torchvision's ``vgg19`` (whose ``classifier.*`` is not needed here). Build with
    :func:`load_vgg19` to get trained weights; a bare ``VGG19Features()`` is random.
    """

    kind = "vgg19"

    def __init__(self, init: bool = True) -> None:
        super().__init__()
        if init:
            self.features = build_vgg19_features()
        else:
            # Weights about to be loaded: allocate without running the (slow, RNG-consuming)
            # random initialisation of 20 M parameters.
            with torch.device("meta"):
                meta = build_vgg19_features()
            self.features = meta.to_empty(device="cpu")
        # Not persistent: the state dict must hold exactly torchvision's keys.
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.layer_names = tuple(VGG19_LAYER_INDEX)
        widths = [int(v) for v in VGG19_CFG if v != "M"]
        self.channels = {n: widths[i] for i, n in enumerate(VGG19_LAYER_INDEX)}
        self.scales = {n: 2 ** (int(n[4]) - 1) for n in VGG19_LAYER_INDEX}
        self.multiple = 16  # relu5_* sits after four poolings
        self.requires_grad_(False).eval()

    def normalize(self, x: Tensor) -> Tensor:
        """``[-1, 1]`` RGB -> the ImageNet-normalised input the weights expect."""
        return ((x + 1.0) * 0.5 - self.mean) / self.std

    def forward(self, x: Tensor, layers: Iterable[str]) -> dict[str, Tensor]:
        """Activations of ``layers`` for images ``x`` (B, 3, H, W) in [-1, 1]."""
        names = self.check_layers(layers)
        wanted = {VGG19_LAYER_INDEX[n]: n for n in names}
        out: dict[str, Tensor] = {}
        h = self.normalize(x)
        last = max(wanted, default=-1)
        for i, module in enumerate(self.features):
            if i > last:
                break  # nothing deeper is needed: skip the expensive late blocks
            # torchvision's ReLUs are in place; run them out of place so that no activation
            # handed back to the caller can ever be modified by a later in-place op.
            h = F.relu(h) if isinstance(module, nn.ReLU) else module(h)
            if i in wanted:
                out[wanted[i]] = h
        return out


def read_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """Tensors of a ``.pth``/``.pt`` (``torch.load(weights_only=True)``) or ``.safetensors`` file.

    A checkpoint that wraps the weights as ``{"state_dict": {...}}`` is unwrapped.

    Raises:
        FileNotFoundError: the file does not exist (the message says where weights come from).
        ValueError: the file is not a plain state dict (or holds pickled code objects).
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(
            f"VGG-19 weights file {p} not found. AvatarForge downloads nothing: pass the torchvision "
            "vgg19 state dict you have (e.g. ~/.cache/torch/hub/checkpoints/vgg19-dcbb9e9d.pth), or omit "
            "--vgg to use the random-weights feature network (see docs/style.md)"
        )
    if p.suffix.lower() == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(p), device="cpu"))
        except (SafetensorError, OSError, ValueError) as e:
            raise ValueError(f"{p}: not a readable safetensors file ({e})") from e
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ValueError(
            f"{p}: refused to load: the file holds Python objects other than tensors (weights_only "
            f"loading never runs code from a file). Save a plain state dict, e.g. "
            f"torch.save(model.state_dict(), path). Details: {str(e).splitlines()[0]}"
        ) from e
    except Exception as e:  # the safe unpickler reports junk as IndexError, KeyError, ...
        raise ValueError(f"{p}: not a readable PyTorch weights file ({type(e).__name__}: {e})") from e
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ValueError(f"{p}: expected a state dict (names -> tensors), got {type(obj).__name__}")
    return {str(k): v for k, v in obj.items()}


def _features_key(key: str) -> str | None:
    """``features.N.weight`` under any wrapper prefix (``module.``, ``vgg.``) -> ``N.weight``."""
    parts = key.split(".")
    if len(parts) >= 3 and parts[-3] == "features" and parts[-2].isdigit():
        return f"{parts[-2]}.{parts[-1]}"
    if len(parts) == 2 and parts[0].isdigit():  # a saved bare ``features`` Sequential
        return key
    return None


def load_vgg19(path: str | os.PathLike, device: str | torch.device = "cpu") -> VGG19Features:
    """:class:`VGG19Features` with the weights of the torchvision-format file ``path``.

    ``classifier.*`` and other non-``features`` keys are ignored; every one of the 32
    ``features.*`` tensors must be present with torchvision's shape.

    Raises:
        FileNotFoundError, ValueError: see :func:`read_state_dict`; missing or mis-shaped keys.
    """
    state = read_state_dict(path)
    net = VGG19Features(init=False)
    expected = net.features.state_dict()
    found: dict[str, Tensor] = {}
    for k, v in state.items():
        fk = _features_key(k)
        if fk is not None and fk in expected:
            found[fk] = v
    missing = [f"features.{k}" for k in expected if k not in found]
    if missing:
        have = ", ".join(list(state)[:4]) + (", ..." if len(state) > 4 else "")
        raise ValueError(
            f"{path}: not a torchvision vgg19 state dict: missing {len(missing)} of {len(expected)} "
            f"features tensors (first: {', '.join(missing[:3])}); the file has: {have or '(nothing)'}"
        )
    wrong = [
        f"features.{k} {tuple(found[k].shape)} (expected {tuple(t.shape)})"
        for k, t in expected.items()
        if tuple(found[k].shape) != tuple(t.shape)
    ]
    if wrong:
        raise ValueError(
            f"{path}: shapes differ from VGG-19's: {'; '.join(wrong[:3])} (is it VGG-16 or another net?)"
        )
    net.features.load_state_dict({k: v.float() for k, v in found.items()}, strict=True)
    return net.to(device).requires_grad_(False).eval()


# ----------------------------------------------------------------------------- the random CNN
class RandomMultiScaleCNN(FeatureNet):
    """A seeded random-weights CNN over an image pyramid, with VGG's layer names.

    ::

        relu1_1 = relu(conv3x3(x))                                   (B, w1, H,   W)
        relu2_1 = relu(conv3x3([avgpool(relu1_1), x / 2]))           (B, w2, H/2, W/2)
        relu3_1 = relu(conv3x3([avgpool(relu2_1), x / 4]))           (B, w3, H/4, W/4)
        relu4_1 = relu(conv3x3([avgpool(relu3_1), x / 8]))           (B, w4, H/8, W/8)
        relu4_2 = relu(conv3x3(relu4_1))                             (B, w4, H/8, W/8)

    (``x / k`` = the image average-pooled by ``k``.) Weights are ``N(0, gain^2 / fan_in)``
    with biases ``N(0, 0.1^2)``, drawn from ``torch.Generator().manual_seed(seed)``; each
    layer's output is divided by a constant measured once on a fixed random input so that
    activations have RMS about 1 at every layer, which keeps the default Gatys weights
    (content 1, style 1e5) balanced the same way at every level.

    Args:
        seed: weight seed (the same seed gives bit-identical weights everywhere).
        widths: channels of the four levels.
    """

    kind = "random"

    def __init__(self, seed: int = 0, widths: tuple[int, int, int, int] = (32, 64, 128, 256)) -> None:
        super().__init__()
        if len(widths) != 4 or min(widths) < 1:
            raise ValueError(f"widths must be 4 positive channel counts, got {widths}")
        self.seed = int(seed)
        self.widths = tuple(int(w) for w in widths)
        g = torch.Generator().manual_seed(self.seed)
        w1, w2, w3, w4 = self.widths
        with torch.device("meta"):  # no default init: it would consume the global RNG
            convs = [
                nn.Conv2d(c_in, c_out, 3, padding=1, padding_mode="reflect")
                for c_in, c_out in ((3, w1), (w1 + 3, w2), (w2 + 3, w3), (w3 + 3, w4), (w4, w4))
            ]
        self.convs = nn.ModuleList([self._init(conv.to_empty(device="cpu"), g) for conv in convs])
        self.layer_names = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu4_2")
        self.channels = dict(zip(self.layer_names, (w1, w2, w3, w4, w4)))
        self.scales = dict(zip(self.layer_names, (1, 2, 4, 8, 8)))
        self.multiple = 8
        # Per-layer output scale, a buffer so that it is part of the fingerprint and moves
        # with .to(device). Measured on a fixed smooth random image (not data-dependent).
        self.register_buffer("gains", torch.ones(len(self.convs)))
        self.requires_grad_(False).eval()
        with torch.no_grad():
            # The probe looks like flat-shaded art: 8x8-pixel blocks of random full-range
            # colours, i.e. flat regions separated by hard edges.
            probe = torch.rand(1, 3, 8, 8, generator=g).double() * 2 - 1
            probe = F.interpolate(probe, scale_factor=8, mode="nearest")  # (1, 3, 64, 64)
            # Measured in float64 and rounded to 4 significant digits: the result must not
            # depend on the thread count or the CPU (a float32 convolution's summation order
            # does), or the fingerprint an AdaIN decoder records would not be reproducible.
            calib = copy.deepcopy(self).double()
            for i, name in enumerate(self.layer_names):
                # Layer by layer: layer i's gain is measured with layers < i already scaled.
                rms = float(calib.forward(probe, [name])[name].square().mean().sqrt())
                calib.gains[i] = float(f"{max(rms, 1e-6):.4g}")
            self.gains.copy_(calib.gains.float())

    @staticmethod
    def _init(conv: nn.Conv2d, g: torch.Generator) -> nn.Conv2d:
        fan_in = conv.in_channels * 9
        with torch.no_grad():
            # He init: keeps the ReLU activations' variance roughly constant with depth.
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
            conv.bias.copy_(torch.randn(conv.out_channels, generator=g) * 0.1)
        return conv

    def describe(self) -> str:
        return f"random(seed={self.seed}, widths={list(self.widths)})"

    def forward(self, x: Tensor, layers: Iterable[str]) -> dict[str, Tensor]:
        """Activations of ``layers`` for images ``x`` (B, 3, H, W) in [-1, 1]."""
        names = self.check_layers(layers)
        last = max(self.layer_names.index(n) for n in names) if names else -1
        out: dict[str, Tensor] = {}
        h: Tensor | None = None
        img = x
        for i, conv in enumerate(self.convs):
            if i > last:
                break
            if i == 0:
                inp = x
            elif i < 4:
                img = F.avg_pool2d(img, 2)  # the image at this level's scale
                assert h is not None
                inp = torch.cat([F.avg_pool2d(h, 2), img], dim=1)
            else:
                assert h is not None
                inp = h
            h = F.relu(conv(inp)) / self.gains[i]
            name = self.layer_names[i]
            if name in names:
                out[name] = h
        return out


# ----------------------------------------------------------------------------- factory
def load_feature_net(
    vgg: str | os.PathLike | None = None, *, seed: int = 0, device: str | torch.device = "cpu"
) -> FeatureNet:
    """VGG-19 from the file ``vgg`` when given, else the seeded :class:`RandomMultiScaleCNN`."""
    if vgg:
        return load_vgg19(vgg, device=device)
    return RandomMultiScaleCNN(seed=seed).to(device)
