"""Codecs, face networks and losses. Importing this package registers every codec and judge."""

# imported for their registrations: every codec, and the "dlib-resnet" judge
from facezip.models import binarized_cae, comcnn_reccnn, dlib_recognizer, hyperprior, lossless, masked_cvae  # noqa: F401
from facezip.models.registry import available_codecs, create_codec, register_codec

__all__ = ["available_codecs", "create_codec", "register_codec"]
