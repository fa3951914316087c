"""facezip: learned compression for face-image archives, run as a Ray pipeline."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("facezip")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"
