"""Small building blocks shared by the GAN families (dcgan, cgan, infogan, stylegan).

Kept deliberately small and stable: other model files import from here.

* :func:`spectral_norm` / :func:`apply_spectral_norm_` -- Miyato et al. 2018, via
  ``torch.nn.utils.parametrizations`` (state-dict keys: ``parametrizations.weight.original``).
* :class:`LabelEmbedding` -- embeds several categorical labels, each with an extra
  "unknown" row.
* :class:`ProjectionHead` -- the projection-discriminator term ``sum_i <embed_i(y_i), h>``.
* :class:`MinibatchStdDev` -- StyleGAN's minibatch standard-deviation feature.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrizations

__all__ = ["LabelEmbedding", "MinibatchStdDev", "ProjectionHead", "apply_spectral_norm_", "spectral_norm"]

# Layers whose ``weight`` spectral normalisation applies to.
_SN_TYPES = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.Embedding)


def spectral_norm(module: nn.Module, enabled: bool = True) -> nn.Module:
    """Return ``module`` with spectral normalisation on its ``weight`` when ``enabled``.

    Initialise the weight *before* calling this: the power-iteration vectors are seeded
    from the weight at registration time.
    """
    return parametrizations.spectral_norm(module) if enabled else module


def apply_spectral_norm_(root: nn.Module) -> nn.Module:
    """Spectral-normalise every conv / linear / embedding weight inside ``root`` in place."""
    # Collect first: registering a parametrization adds sub-modules while we iterate.
    targets = [m for m in root.modules() if isinstance(m, _SN_TYPES)]
    for m in targets:
        parametrizations.spectral_norm(m)
    return root


class LabelEmbedding(nn.Module):
    """Embed ``L`` categorical labels; label ``i`` has ``label_dims[i] + 1`` rows.

    The extra last row is the "unknown" class (the data set's NaN), so index
    ``label_dims[i]`` is valid input. One table per label (not a single offset table):
    an out-of-range index then fails loudly instead of reading the next label's rows.

    Args:
        label_dims: number of classes of each label.
        embed_dim: size of each label's embedding.
        reduce: ``"concat"`` -> ``(B, L * embed_dim)``; ``"sum"`` -> ``(B, embed_dim)``.
        init_std: std of the normal initialisation; ``None`` keeps ``nn.Embedding``'s own
            N(0, 1) draw without drawing again (StyleGAN's mapping network and projection, whose
            seeded initial weights were made that way).
    """

    def __init__(
        self,
        label_dims: Sequence[int],
        embed_dim: int,
        reduce: str = "concat",
        init_std: float | None = 1.0,
    ) -> None:
        super().__init__()
        if reduce not in ("concat", "sum"):
            raise ValueError(f"reduce must be 'concat' or 'sum', got {reduce!r}")
        if not label_dims:
            raise ValueError("LabelEmbedding needs at least one label")
        self.label_dims = list(label_dims)
        self.embed_dim = embed_dim
        self.reduce = reduce
        self.tables = nn.ModuleList(nn.Embedding(k + 1, embed_dim) for k in self.label_dims)
        if init_std is not None:
            for t in self.tables:
                nn.init.normal_(t.weight, 0.0, init_std)

    @property
    def out_features(self) -> int:
        return self.embed_dim * (len(self.label_dims) if self.reduce == "concat" else 1)

    def forward(self, labels: Tensor) -> Tensor:
        """``(B, L)`` integer labels -> ``(B, out_features)``."""
        embs = [t(labels[:, i]) for i, t in enumerate(self.tables)]  # L x (B, D)
        if self.reduce == "concat":
            return torch.cat(embs, 1) if len(embs) > 1 else embs[0]
        out = embs[0]
        for e in embs[1:]:
            out = out + e
        return out


class ProjectionHead(nn.Module):
    """Projection discriminator term (Miyato & Koyama 2018): ``sum_i <embed_i(y_i), h>``.

    Add its ``(B,)`` output to the unconditional logit. ``h`` is the discriminator's pooled
    feature vector ``(B, in_features)``.
    """

    def __init__(self, in_features: int, label_dims: Sequence[int], init_std: float = 0.02) -> None:
        super().__init__()
        # Summing the per-label embeddings first = summing the per-label inner products.
        self.embed = LabelEmbedding(label_dims, in_features, reduce="sum", init_std=init_std)

    def forward(self, h: Tensor, labels: Tensor) -> Tensor:
        """``(B, F)`` features, ``(B, L)`` labels -> ``(B,)``."""
        return (self.embed(labels) * h).sum(1)

    def class_logits(self, h: Tensor) -> list[Tensor]:
        """``(B, F)`` features -> per label ``(B, K_i)``: the projection score of every class.

        The projection term is a log-likelihood ratio of class posteriors (Miyato & Koyama
        2018), so a softmax over these scores is a classifier that shares D's weights; the
        trainer's ``loss.class_weight`` trains it (AC-GAN style, no extra parameters).
        The "unknown" row is left out.
        """
        return [h @ t.weight[:k].t() for t, k in zip(self.embed.tables, self.embed.label_dims)]


class MinibatchStdDev(nn.Module):
    """Append the std of features across a group of samples as extra channels (StyleGAN).

    Lets the discriminator see batch diversity, which discourages mode collapse.
    ``(B, C, H, W) -> (B, C + num_channels, H, W)``. The group is the largest divisor of
    ``B`` not above ``group_size``, so any batch size works.
    """

    def __init__(self, group_size: int = 4, num_channels: int = 1) -> None:
        super().__init__()
        self.group_size = group_size
        self.num_channels = num_channels

    def forward(self, x: Tensor) -> Tensor:
        B, C, H, W = x.shape
        G = min(self.group_size, B)
        while B % G:
            G -= 1
        F = self.num_channels
        if C % F:
            raise ValueError(f"channels ({C}) must be divisible by num_channels ({F})")
        y = x.reshape(G, -1, F, C // F, H, W)  # (G, B/G, F, C/F, H, W); groups are strided samples
        y = (y.var(0, unbiased=False) + 1e-8).sqrt()  # (B/G, F, C/F, H, W)
        y = y.mean(dim=(2, 3, 4)).reshape(-1, F, 1, 1)  # (B/G, F, 1, 1)
        y = y.repeat(G, 1, H, W)  # (B, F, H, W)
        return torch.cat([x, y.to(x.dtype)], 1)
