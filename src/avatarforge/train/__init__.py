"""Training: the GAN loop and the reusable pieces every model family's loop is built from.

* :class:`GANTrainer` (``avatarforge.train.gan``): ``GANTrainer(config).fit() -> run_dir``.
* :class:`VAETrainer` (``avatarforge.train.vae``): the same for ``vae``/``cvae``.
* :func:`load_generator`: a trained generator (EMA weights) from a run directory or checkpoint;
  :func:`load_vae`: a trained VAE.
* :func:`train_main` / :func:`add_train_arguments`: the ``avatarforge train`` command.
* Generic pieces: :mod:`.rundir`, :mod:`.checkpoint`, :mod:`.ema`, :mod:`.losses`,
  :mod:`.guard`, :mod:`.metrics_log`, :mod:`.distributed`, :mod:`.common`.

Attributes are imported lazily so ``import avatarforge.train`` (done by the CLI to build its
parser) does not import torch.
"""

from __future__ import annotations

from avatarforge.lazy import lazy_attributes

__all__ = [
    "GANTrainer",
    "TrainConfig",
    "TrainingDiverged",
    "VAETrainer",
    "add_train_arguments",
    "build_train_config",
    "load_generator",
    "load_network",
    "load_vae",
    "train_main",
]

_LAZY = {
    "GANTrainer": "avatarforge.train.gan",
    "TrainingDiverged": "avatarforge.train.guard",
    "load_generator": "avatarforge.train.loading",
    "load_network": "avatarforge.train.loading",
    "load_vae": "avatarforge.train.loading",
    "VAETrainer": "avatarforge.train.vae",
    "train_main": "avatarforge.train.cli",
    "add_train_arguments": "avatarforge.train.cli",
    "TrainConfig": "avatarforge.config",
    "build_train_config": "avatarforge.config",
}


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
