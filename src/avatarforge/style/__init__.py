"""Style transfer for avatars (``avatarforge style``; see docs/style.md).

* Weight-free: :func:`colour_transfer` (Reinhard, Lab mean/std) and :func:`histogram_match`
  (per-channel CDF matching in RGB or Lab) -- :mod:`.classical`.
* Neural: :func:`gatys_transfer` (optimisation) and :func:`adain_transfer` (AdaIN with a
  trained decoder, or a training-free optimisation fallback), :func:`train_adain_decoder`
  -- :mod:`.neural`; feature networks (VGG-19 from a user file, or a seeded random CNN)
  -- :mod:`.features`.
* Unpaired translation: :class:`CycleGANTrainer` (``style train``), :func:`load_translator`
  and :func:`translate_image` (``style apply``) -- :mod:`.train_cyclegan`; the networks
  -- :mod:`.cyclegan`.

Every function takes ``(H, W, 3|4)`` uint8 images and returns the content's shape with the
content's alpha unchanged. Attributes are imported lazily, so ``import avatarforge.style``
(done by the CLI to build its parser) does not import torch.
"""

from __future__ import annotations

from avatarforge.lazy import lazy_attributes

__all__ = [
    "AdaINDecoder",
    "CycleGANConfig",
    "CycleGANGenerator",
    "CycleGANTrainer",
    "PatchDiscriminator",
    "RandomMultiScaleCNN",
    "VGG19Features",
    "adain_transfer",
    "add_style_arguments",
    "build_cyclegan_config",
    "colour_transfer",
    "gatys_transfer",
    "histogram_match",
    "load_adain_decoder",
    "load_feature_net",
    "load_translator",
    "load_vgg19",
    "style_main",
    "train_adain_decoder",
    "translate_image",
]

_LAZY = {
    "colour_transfer": "avatarforge.style.classical",
    "histogram_match": "avatarforge.style.classical",
    "RandomMultiScaleCNN": "avatarforge.style.features",
    "VGG19Features": "avatarforge.style.features",
    "load_feature_net": "avatarforge.style.features",
    "load_vgg19": "avatarforge.style.features",
    "AdaINDecoder": "avatarforge.style.neural",
    "adain_transfer": "avatarforge.style.neural",
    "gatys_transfer": "avatarforge.style.neural",
    "load_adain_decoder": "avatarforge.style.neural",
    "train_adain_decoder": "avatarforge.style.neural",
    "CycleGANGenerator": "avatarforge.models.cyclegan",
    "PatchDiscriminator": "avatarforge.models.cyclegan",
    "CycleGANConfig": "avatarforge.style.train_cyclegan",
    "CycleGANTrainer": "avatarforge.style.train_cyclegan",
    "build_cyclegan_config": "avatarforge.style.train_cyclegan",
    "load_translator": "avatarforge.style.train_cyclegan",
    "translate_image": "avatarforge.style.train_cyclegan",
    "add_style_arguments": "avatarforge.style.cli",
    "style_main": "avatarforge.style.cli",
}


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
