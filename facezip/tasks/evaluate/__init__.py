"""The ``evaluate`` stage: facezip against JPEG / WebP / AVIF on rate, quality and identity."""

from facezip.tasks.evaluate.run import run_evaluate

__all__ = ["run_evaluate"]
