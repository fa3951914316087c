"""Codecs, face networks and losses. Importing this package registers every codec and judge."""

from facezip.models.registry import available_codecs, create_codec, register_codec
from facezip.models import binarized_cae, hyperprior, masked_cvae  # noqa: F401  (register every codec)
from facezip.models import dlib_recognizer  # noqa: F401  (registers the "dlib-resnet" judge)

__all__ = ["available_codecs", "create_codec", "register_codec"]
