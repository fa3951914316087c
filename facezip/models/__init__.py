"""Codecs, face networks and losses. Importing this package registers every codec."""

from facezip.models.registry import available_codecs, create_codec, register_codec
from facezip.models import binarized_cae, hyperprior, masked_cvae  # noqa: F401  (register every codec)

__all__ = ["available_codecs", "create_codec", "register_codec"]
