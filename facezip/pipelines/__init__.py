"""Stages run in order, as defined by YAML files under ``configs/pipelines``."""
