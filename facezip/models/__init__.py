"""Codecs, face networks and losses. Importing this package registers every codec."""

from facezip.models.registry import available_codecs, create_codec, register_codec
from facezip.models import binarized_cae  # noqa: F401  (registers "binarized-cae")

__all__ = ["available_codecs", "create_codec", "register_codec"]
