"""Explicit name -> class registries (networks, methods, losses).

Register with the decorator; an unknown name raises :class:`LdctError` listing the known names.
Nothing is auto-imported from file names.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

from ldct.errors import LdctError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise LdctError(f"unknown {self.kind} {name!r}; known: {', '.join(sorted(self._items))}") from None

    def build(self, name: str, **kwargs: Any) -> Any:
        return self.get(name)(**kwargs)  # type: ignore[operator]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items
