"""Data: packed data sets, the procedural avatar renderer, ingest of user images, augmentation.

The main entry points::

    from avatarforge.data import PackedDataset, DiffAugment, build_builtin_dataset, prepare_dataset
"""

from __future__ import annotations

from avatarforge.lazy import lazy_attributes

# Lazy attributes: ``import avatarforge.data`` (done by the CLI to build its parser, and by
# every data submodule) must not import torch; only the names that need it do.
_WHERE = {
    "DiffAugment": "augment",
    "diff_augment": "augment",
    "hflip": "augment",
    "build_builtin_dataset": "builtin",
    "PackedDataset": "dataset",
    "ShardedSampler": "dataset",
    "infinite_batches": "dataset",
    "label_indices": "dataset",
    "shard_indices": "dataset",
    "LabelField": "packed",
    "LabelSchema": "packed",
    "PackedFormatError": "packed",
    "PackedWriter": "packed",
    "read_manifest": "packed",
    "read_schema": "packed",
    "PrepareReport": "prepare",
    "prepare_dataset": "prepare",
}

__all__ = [
    "DiffAugment",
    "LabelField",
    "LabelSchema",
    "PackedDataset",
    "PackedFormatError",
    "PackedWriter",
    "PrepareReport",
    "ShardedSampler",
    "build_builtin_dataset",
    "diff_augment",
    "hflip",
    "infinite_batches",
    "label_indices",
    "prepare_dataset",
    "read_manifest",
    "read_schema",
    "shard_indices",
]


__getattr__, __dir__ = lazy_attributes(__name__, {k: f"avatarforge.data.{v}" for k, v in _WHERE.items()})
