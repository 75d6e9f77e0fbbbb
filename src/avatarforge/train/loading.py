"""Loading trained networks back from a run moved to :mod:`avatarforge.runs`; the names stay here."""

from __future__ import annotations

from avatarforge.runs import is_vae_checkpoint, load_generator, load_network, load_vae

__all__ = ["is_vae_checkpoint", "load_generator", "load_network", "load_vae"]
