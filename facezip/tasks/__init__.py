"""The pipeline's stages, one package each. Importing any of them registers what a stage adds
to the layers below: detect's output folder with the readers."""

from facezip.tasks.detect import output  # noqa: F401  (registers detect's output folder)
