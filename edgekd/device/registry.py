"""One registry per kind of thing (models, KD methods, targets, power meters, ...)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from edgekd.device.errors import EdgekdError

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> object, with aliases and errors that list what is known."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}
        self._aliases: dict[str, str] = {}

    def register(self, name: str | None = None, *, aliases: tuple[str, ...] = ()) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            key = name or obj.__name__  # type: ignore[attr-defined]  # classes and functions have one
            if key in self._items or key in self._aliases:
                raise ValueError(f"{self.kind} '{key}' registered twice")
            self._items[key] = obj
            for alias in aliases:
                self._aliases[alias] = key
            return obj
        return decorator

    def add(self, name: str, obj: T, *, aliases: tuple[str, ...] = ()) -> T:
        return self.register(name, aliases=aliases)(obj)

    def resolve(self, name: str) -> str:
        key = self._aliases.get(name, name)
        if key not in self._items:
            raise EdgekdError(f"unknown {self.kind} '{name}'",
                              fix=f"known {self.kind}s: {', '.join(self.names(with_aliases=True))}")
        return key

    def get(self, name: str) -> T:
        return self._items[self.resolve(name)]

    def names(self, *, with_aliases: bool = False) -> list[str]:
        names = sorted(self._items)
        if with_aliases:
            names += [f"{a} (= {k})" for a, k in sorted(self._aliases.items())]
        return names

    def __contains__(self, name: str) -> bool:
        return self._aliases.get(name, name) in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def __len__(self) -> int:
        return len(self._items)
