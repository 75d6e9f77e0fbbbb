"""Training: the one training engine, its families, and the pieces the engine is built from.

* :func:`train` (``avatarforge.train.families``): ``train(config) -> run_dir`` with the
  trainer of the config's family (GAN, VAE, CycleGAN, the expression animator);
  :func:`make_trainer` returns that trainer unstarted, :func:`trainer_class` its class.
* :class:`GANTrainer` (``avatarforge.train.gan``): ``GANTrainer(config).fit() -> run_dir``.
* :class:`VAETrainer` (``avatarforge.train.vae``): the same for ``vae``/``cvae``.
* The engine every trainer subclasses: :class:`~avatarforge.train.engine.Trainer`.
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
    "family_of",
    "load_generator",
    "load_network",
    "load_vae",
    "make_trainer",
    "register_family",
    "train",
    "train_main",
    "trainer_class",
]

_LAZY = {
    "GANTrainer": "avatarforge.train.gan",
    "TrainingDiverged": "avatarforge.train.guard",
    "load_generator": "avatarforge.train.loading",
    "load_network": "avatarforge.train.loading",
    "load_vae": "avatarforge.train.loading",
    "VAETrainer": "avatarforge.train.vae",
    "family_of": "avatarforge.train.families",
    "make_trainer": "avatarforge.train.families",
    "register_family": "avatarforge.train.families",
    "train": "avatarforge.train.families",
    "trainer_class": "avatarforge.train.families",
    "train_main": "avatarforge.train.cli",
    "add_train_arguments": "avatarforge.train.cli",
    "TrainConfig": "avatarforge.config",
    "build_train_config": "avatarforge.config",
}


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
