"""Data: packed data sets, the procedural avatar renderer, ingest of user images, augmentation.

The main entry points::

    from avatarforge.data import PackedDataset, DiffAugment, build_builtin_dataset, prepare_dataset
"""

from avatarforge.data.augment import DiffAugment, diff_augment, hflip
from avatarforge.data.builtin import build_builtin_dataset
from avatarforge.data.dataset import (
    PackedDataset,
    ShardedSampler,
    infinite_batches,
    label_indices,
    shard_indices,
)
from avatarforge.data.packed import (
    LabelField,
    LabelSchema,
    PackedFormatError,
    PackedWriter,
    read_manifest,
    read_schema,
)
from avatarforge.data.prepare import PrepareReport, prepare_dataset

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
