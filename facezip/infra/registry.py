"""Names → registered things, each name once: the one mechanism behind facezip's registries
(codecs, metrics, readers, baselines, training phases), as CompressAI registers its models."""

from __future__ import annotations

from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(dict[str, T], Generic[T]):
    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind  # "codec", "metric", … for the error message

    def register(self, name: str, item: T) -> T:
        """Add ``item`` under ``name``; a name taken twice is an error naming what holds it."""
        if name in self:
            holder = getattr(self[name], "__qualname__", None)
            raise ValueError(f"{self.kind} '{name}' is already registered" + (f" by {holder}" if holder else ""))
        self[name] = item
        return item
