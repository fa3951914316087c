"""Bundled pipeline definitions (installed as ``facezip.configs.pipelines``)."""
