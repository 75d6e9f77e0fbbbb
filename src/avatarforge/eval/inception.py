"""The Inception-v3 network of the standard FID, in plain PyTorch (no torchvision).

This is the "FID Inception" that `pytorch-fid <https://github.com/mseitzer/pytorch-fid>`_
ports from TensorFlow's ``inception-2015-12-05`` graph: torchvision's ``Inception3``
layout with 1008 classes, no auxiliary head, and the TF graph's differences patched in:

- the average-pool branches of the A, C and E blocks do not count padded zeros
  (``count_include_pad=False``, TF's ``SAME`` average pooling);
- the pool branch of the last E block (``Mixed_7c``) uses *max* pooling.

Module and parameter names equal those of that port, so its weight file
``pt_inception-2015-12-05-6726825d.pth`` (a plain state dict) loads with ``strict=True``:
``Conv2d_1a_3x3.conv.weight``, ``Conv2d_1a_3x3.bn.running_mean``, ``Mixed_5b.branch1x1.conv.weight``,
..., ``fc.weight`` (1008 x 2048).

Nothing is downloaded. :class:`InceptionExtractor` loads the file the user names
(``--weights PATH``) or the one at :func:`default_weights_path`
(``$AVATARFORGE_CACHE/weights/pt_inception-2015-12-05-6726825d.pth``), with
``torch.load(..., weights_only=True)`` (no unpickling of code) or safetensors.

Preprocessing (as ``pytorch_fid.inception.InceptionV3``): images in ``[0, 1]`` are resized
to 299x299 with ``F.interpolate(mode="bilinear", align_corners=False)`` (no antialiasing),
scaled to ``[-1, 1]``, and the 2048-d output of the final average pool ("pool3") is the
feature vector.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avatarforge.eval.features import FeatureExtractor
from avatarforge.fileio import file_sha256

__all__ = [
    "INCEPTION_FEATURE_DIM",
    "INCEPTION_INPUT_SIZE",
    "INCEPTION_WEIGHTS_NAME",
    "FIDInceptionV3",
    "InceptionExtractor",
    "InceptionWeightsError",
    "default_weights_path",
    "load_inception_state_dict",
]

INCEPTION_WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"
INCEPTION_INPUT_SIZE = 299
INCEPTION_FEATURE_DIM = 2048
_NUM_CLASSES = 1008  # the TF graph's 1001 ImageNet classes padded to 1008


class InceptionWeightsError(FileNotFoundError):
    """The Inception weight file is missing or does not fit the network (message says the fix)."""


def default_weights_path() -> Path:
    """Where the Inception weights are looked for without ``--weights``:
    ``$AVATARFORGE_CACHE/weights/pt_inception-2015-12-05-6726825d.pth`` (cache default
    ``~/.cache/avatarforge``)."""
    from avatarforge.fileio import default_cache_dir

    return default_cache_dir() / "weights" / INCEPTION_WEIGHTS_NAME


# ----------------------------------------------------------------------------- architecture
class BasicConv2d(nn.Module):
    """Conv (no bias) + BatchNorm (eps 1e-3, as TF) + ReLU."""

    def __init__(self, in_channels: int, out_channels: int, **kwargs: Any) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)), inplace=True)


def _tf_avg_pool(x: Tensor) -> Tensor:
    # TF's SAME average pooling divides by the number of real (unpadded) pixels.
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    """35x35 block: 1x1, 5x5, double 3x3 and pool branches -> 224 + pool_features channels."""

    def __init__(self, in_channels: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(in_channels, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(in_channels, pool_features, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(_tf_avg_pool(x))
        return torch.cat([b1, b5, b3, bp], 1)


class InceptionB(nn.Module):
    """35 -> 17 grid reduction: strided 3x3, double 3x3 and max-pool branches."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(in_channels, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3(x)
        bd = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([b3, bd, bp], 1)


class InceptionC(nn.Module):
    """17x17 block with factorised 7x7 convolutions -> 768 channels."""

    def __init__(self, in_channels: int, channels_7x7: int) -> None:
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            bd = layer(bd)
        bp = self.branch_pool(_tf_avg_pool(x))
        return torch.cat([b1, b7, bd, bp], 1)


class InceptionD(nn.Module):
    """17 -> 8 grid reduction."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_1(x)
        for layer in (self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            b7 = layer(b7)
        bp = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([b3, b7, bp], 1)


class InceptionE(nn.Module):
    """8x8 block with split 1x3/3x1 branches -> 2048 channels.

    ``max_pool=True`` is the TF graph's last block (``Mixed_7c``), whose pool branch uses max
    instead of average pooling.
    """

    def __init__(self, in_channels: int, max_pool: bool = False) -> None:
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = BasicConv2d(in_channels, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(in_channels, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        b1 = self.branch1x1(x)
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
        pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1) if self.max_pool else _tf_avg_pool(x)
        bp = self.branch_pool(pooled)
        return torch.cat([b1, b3, bd, bp], 1)


class FIDInceptionV3(nn.Module):
    """The FID Inception-v3 (inputs ``(B, 3, 299, 299)`` in ``[-1, 1]``).

    :meth:`forward` returns the pool3 features ``(B, 2048)``; :meth:`logits` the 1008 class
    scores. Construction does not initialise weights meaningfully: load a state dict.
    """

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.maxpool1 = nn.MaxPool2d(kernel_size=3, stride=2)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.maxpool2 = nn.MaxPool2d(kernel_size=3, stride=2)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, channels_7x7=128)
        self.Mixed_6c = InceptionC(768, channels_7x7=160)
        self.Mixed_6d = InceptionC(768, channels_7x7=160)
        self.Mixed_6e = InceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280)
        self.Mixed_7c = InceptionE(2048, max_pool=True)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(2048, _NUM_CLASSES)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, 3, 299, 299)`` in [-1, 1] -> pool3 features ``(B, 2048)``."""
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))  # (B, 64, 147, 147)
        x = self.maxpool1(x)  # (B, 64, 73, 73)
        x = self.maxpool2(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)))  # (B, 192, 35, 35)
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a):
            x = block(x)  # -> (B, 768, 17, 17)
        for block in (self.Mixed_6b, self.Mixed_6c, self.Mixed_6d, self.Mixed_6e, self.Mixed_7a):
            x = block(x)  # -> (B, 1280, 8, 8)
        x = self.Mixed_7c(self.Mixed_7b(x))  # (B, 2048, 8, 8)
        return torch.flatten(self.avgpool(x), 1)  # (B, 2048)

    def logits(self, x: Tensor) -> Tensor:
        """``(B, 3, 299, 299)`` in [-1, 1] -> ``(B, 1008)`` class logits."""
        return self.fc(self.forward(x))


# ----------------------------------------------------------------------------- weights
def load_inception_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """Read a weight file: ``.safetensors`` or a ``torch.save``'d state dict.

    ``torch.load`` runs with ``weights_only=True``: tensors and plain containers only, never
    arbitrary pickled objects.

    Raises:
        InceptionWeightsError: the file is missing or not a state dict.
    """
    p = Path(path)
    if not p.is_file():
        raise InceptionWeightsError(_missing_message(p))
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(p), device="cpu")
        else:
            state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # any decode failure means the same thing to the user
        raise InceptionWeightsError(
            f"cannot read Inception weights from {p} ({type(e).__name__}: {e}); expected the state dict "
            f"{INCEPTION_WEIGHTS_NAME} (a torch.save'd dict of tensors) or a .safetensors file"
        ) from e
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise InceptionWeightsError(f"{p} does not hold a state dict (a dict of tensors)")
    return state


def _missing_message(p: Path) -> str:
    return (
        f"Inception weights not found at {p}. The 'inception' extractor (standard FID) needs the "
        f"pytorch-fid port of TF Inception-v3, file {INCEPTION_WEIGHTS_NAME} (about 91 MB, from the "
        f"pytorch-fid releases). AvatarForge never downloads it: put it at {default_weights_path()} "
        f"or pass --weights PATH (Python: weights=PATH). Or use --extractor avatar, which needs no download."
    )


def _check_keys(net: nn.Module, state: dict[str, Tensor], path: Path) -> None:
    expected = set(net.state_dict())
    # num_batches_tracked counters are bookkeeping BatchNorm fills in when absent.
    missing = sorted(k for k in expected - set(state) if not k.endswith("num_batches_tracked"))
    unexpected = sorted(set(state) - expected)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} key(s), e.g. {', '.join(missing[:3])}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} key(s), e.g. {', '.join(unexpected[:3])}")
        raise InceptionWeightsError(
            f"{path} is not the FID Inception-v3 state dict ({'; '.join(parts)}); expected "
            f"{INCEPTION_WEIGHTS_NAME} from pytorch-fid (torchvision's Inception weights do not fit)"
        )


class InceptionExtractor(FeatureExtractor):
    """``inception``: FID Inception-v3 pool3 features (2048-d) with pytorch-fid's preprocessing.

    Args:
        weights: the weight file; default :func:`default_weights_path`.
        device: where to run.

    Raises:
        InceptionWeightsError: missing file (the message says where to put it and what it is),
            unreadable file, or keys that do not match the network (``strict=True``).
    """

    name = "inception"
    feature_dim = INCEPTION_FEATURE_DIM
    input_size = INCEPTION_INPUT_SIZE

    def __init__(self, weights: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> None:
        self.weights_path = Path(weights) if weights is not None else default_weights_path()
        state = load_inception_state_dict(self.weights_path)
        self.net = FIDInceptionV3()
        _check_keys(self.net, state, self.weights_path)
        for k, v in self.net.state_dict().items():
            if k.endswith("num_batches_tracked") and k not in state:
                state[k] = torch.zeros_like(v)  # unused in eval mode; absent from some exports
        self.net.load_state_dict(state, strict=True)
        self.net.eval().requires_grad_(False)
        self.weights_sha256 = file_sha256(self.weights_path, memoize=True)
        self.to(device)

    @property
    def identity(self) -> str:
        return f"inception:{self.weights_sha256[:16]}"

    def to(self, device: str | torch.device) -> InceptionExtractor:
        self.device = torch.device(device)
        # NHWC convolutions: ~1.5x faster on CPU (oneDNN) and on recent GPUs; the values
        # differ from NCHW only by float rounding.
        self.net.to(self.device, memory_format=torch.channels_last)
        return self

    def preprocess(self, x: Tensor) -> Tensor:
        """``(B, 3, H, W)`` in [0, 1] -> ``(B, 3, 299, 299)`` in [-1, 1], as pytorch-fid does."""
        x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        return 2 * x - 1

    def features(self, x: Tensor) -> Tensor:
        x = self.preprocess(x).contiguous(memory_format=torch.channels_last)
        if self.device.type == "cuda":
            # Full float32 convolutions: TF32 (PyTorch's default for cuDNN) rounds inputs to
            # 10 mantissa bits, enough to move FID in the second decimal.
            with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
                return self.net(x)
        return self.net(x)

    def info(self) -> dict[str, Any]:
        return {**super().info(), "weights": str(self.weights_path), "weights_sha256": self.weights_sha256}
