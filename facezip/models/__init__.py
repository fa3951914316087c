"""Codecs, face networks and losses. Importing this package registers every codec."""

from facezip.models.registry import available_codecs, create_codec, register_codec
from facezip.models import binarized_cae, hyperprior  # noqa: F401  (register "binarized-cae", "mean-scale-hyperprior")

__all__ = ["available_codecs", "create_codec", "register_codec"]
