"""Codecs, face networks and losses. Importing this package registers every codec and judge."""

from facezip.models.registry import available_codecs, create_codec, register_codec
from facezip.models import binarized_cae, hyperprior  # noqa: F401  (register "binarized-cae", "mean-scale-hyperprior")
from facezip.models import dlib_recognizer  # noqa: F401  (registers the "dlib-resnet" judge)

__all__ = ["available_codecs", "create_codec", "register_codec"]
