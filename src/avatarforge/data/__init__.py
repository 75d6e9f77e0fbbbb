"""Data: packed data sets, the procedural avatar renderer, ingest of user images, augmentation."""

from avatarforge.data.packed import LabelField, LabelSchema, PackedWriter, read_manifest, read_schema

__all__ = ["LabelField", "LabelSchema", "PackedWriter", "read_manifest", "read_schema"]
