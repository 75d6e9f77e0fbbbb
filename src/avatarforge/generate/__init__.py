"""Generation and personalisation (``avatarforge generate`` / ``interpolate`` / ``edit``;
see docs/generation.md).

* :class:`GeneratorPipeline` -- load a run directory or checkpoint, ``.to(device)``, one
  ``__call__(seeds=..., n=..., truncation=..., attrs=..., codes=...)`` returning a
  :class:`GenerationResult` (uint8 images, latents, parameters; ``.save()`` writes PNG/WebP
  with the parameters and the model hash in the metadata) -- :mod:`.pipeline`;
* :func:`read_metadata` -- :mod:`.metadata`; :func:`regenerate_from_png`,
  :func:`latent_from_png` -- :mod:`.regenerate`;
* :func:`interpolate`, :func:`save_video` (MP4, GIF, WebP, APNG) -- :mod:`.interpolate`;
* :func:`variations`, :func:`style_mix` -- :mod:`.variations`;
* sliders: :func:`label_directions`, :func:`code_directions`, :func:`sefa_directions`,
  :func:`ganspace_directions`, :func:`name_directions`, :func:`slide` -- :mod:`.directions`;
* :func:`invert` (latent of your image) -- :mod:`.invert`;
* CLI: :func:`add_generate_arguments`/:func:`generate_main`, :func:`add_interpolate_arguments`/
  :func:`interpolate_main`, :func:`add_personalise_arguments`/:func:`personalise_main` --
  :mod:`.cli`;
* working with a trained VAE: :mod:`.vae_ops`, :mod:`.vae_cli`.

Attributes are imported lazily, so ``import avatarforge.generate`` (done by the CLI to build
its parser) does not import torch.

``variations``, ``interpolate`` and ``invert`` are both functions and submodules; on the package they
always mean the functions (import other names with ``from avatarforge.generate.variations
import ...``).
"""

from __future__ import annotations

from avatarforge.lazy import lazy_attributes

__all__ = [
    "Direction",
    "GenerationResult",
    "GeneratorPipeline",
    "InversionResult",
    "Latent",
    "add_generate_arguments",
    "add_interpolate_arguments",
    "add_personalise_arguments",
    "apply_direction",
    "code_directions",
    "ganspace_directions",
    "generate_main",
    "interpolate",
    "interpolate_main",
    "invert",
    "label_directions",
    "latent_from_png",
    "load_directions",
    "ms_ssim",
    "name_directions",
    "parse_seeds",
    "personalise_main",
    "read_metadata",
    "regenerate_from_png",
    "save_directions",
    "save_video",
    "sefa_directions",
    "slide",
    "style_mix",
    "variations",
]

_LAZY = {
    "GenerationResult": "avatarforge.generate.pipeline",
    "GeneratorPipeline": "avatarforge.generate.pipeline",
    "Latent": "avatarforge.generate.pipeline",
    "parse_seeds": "avatarforge.generate.pipeline",
    "latent_from_png": "avatarforge.generate.regenerate",
    "read_metadata": "avatarforge.generate.metadata",
    "regenerate_from_png": "avatarforge.generate.regenerate",
    "interpolate": "avatarforge.generate.interpolate",
    "save_video": "avatarforge.generate.interpolate",
    "style_mix": "avatarforge.generate.variations",
    "variations": "avatarforge.generate.variations",
    "Direction": "avatarforge.generate.directions",
    "apply_direction": "avatarforge.generate.directions",
    "code_directions": "avatarforge.generate.directions",
    "ganspace_directions": "avatarforge.generate.directions",
    "label_directions": "avatarforge.generate.directions",
    "load_directions": "avatarforge.generate.directions",
    "name_directions": "avatarforge.generate.directions",
    "save_directions": "avatarforge.generate.directions",
    "sefa_directions": "avatarforge.generate.directions",
    "slide": "avatarforge.generate.directions",
    "InversionResult": "avatarforge.generate.invert",
    "invert": "avatarforge.generate.invert",
    "ms_ssim": "avatarforge.generate.invert",
    "add_generate_arguments": "avatarforge.generate.cli",
    "add_interpolate_arguments": "avatarforge.generate.cli",
    "add_personalise_arguments": "avatarforge.generate.cli",
    "generate_main": "avatarforge.generate.cli",
    "interpolate_main": "avatarforge.generate.cli",
    "personalise_main": "avatarforge.generate.cli",
}


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
