"""Bundled configuration files (installed as the ``facezip.configs`` package)."""
