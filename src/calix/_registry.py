"""Named families of objects: one :class:`Registry` per family (explainers, calibrators,
uncertainty samplers, zoo architectures, level metrics), filled where the objects are defined.

A registry is a read-only mapping from name to object, in registration order, with metadata
per name. Unknown names raise :class:`UnknownNameError` (a ``KeyError`` and a ``ValueError``)
naming the family, the known names and the closest one.

Example
-------
>>> from calix._registry import Registry
>>> COLOURS = Registry("colour")
>>> @COLOURS.register("red", warm=True)
... def red(): return "#f00"
>>> COLOURS.names(), dict(COLOURS.meta("red"))
(('red',), {'warm': True})
>>> COLOURS.get("rde")
Traceback (most recent call last):
...
calix._registry.UnknownNameError: unknown colour 'rde'; known: red (did you mean 'red'?)
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType
from typing import Any, Generic, TypeVar, overload

__all__ = ["Registry", "UnknownNameError"]

T = TypeVar("T")
_MISSING: Any = object()


class UnknownNameError(KeyError, ValueError):
    """A name no registry entry has; the message names the known names and the closest one."""

    def __str__(self) -> str:  # KeyError would show the repr of the message
        return str(self.args[0]) if self.args else ""


class Registry(Mapping[str, T], Generic[T]):
    """The named objects of one ``family`` ("explainer", "calibrator", ...).

    ``register(name, obj, **meta)`` adds one (``register(name, **meta)`` is a decorator);
    ``get(name)`` / ``registry[name]`` finds it; ``names()``, iteration, ``len`` and ``in``
    follow registration order; ``meta(name)`` is the read-only metadata given at
    registration.
    """

    def __init__(self, family: str):
        self.family = family
        self._objects: dict[str, T] = {}
        self._meta: dict[str, Mapping[str, Any]] = {}

    @overload
    def register(self, name: str, obj: None = None, **meta: Any) -> Callable[[T], T]: ...

    @overload
    def register(self, name: str, obj: T, **meta: Any) -> T: ...

    def register(self, name: str, obj: Any = None, **meta: Any) -> Any:
        """Register ``obj`` as ``name`` and return it; without ``obj``, a decorator that
        registers what it decorates. A name is registered once."""
        if not isinstance(name, str) or not name:
            raise TypeError(f"a {self.family} name must be a non-empty string, got {name!r}")

        def add(o: T) -> T:
            if name in self._objects:
                raise ValueError(f"{self.family} {name!r} is already registered "
                                 f"({self._objects[name]!r})")
            self._objects[name] = o
            self._meta[name] = MappingProxyType(dict(meta))
            return o

        return add if obj is None else add(obj)

    def get(self, name: str, default: Any = _MISSING) -> T:  # type: ignore[override]
        """The object registered as ``name``; an :class:`UnknownNameError` naming the known
        names and the closest match when there is none (or ``default``, if given)."""
        try:
            return self._objects[name]
        except (KeyError, TypeError):
            if default is not _MISSING:
                return default
            raise UnknownNameError(self.unknown(name)) from None

    def unknown(self, name: Any) -> str:
        """The message for an unknown ``name``: the known names and the closest one."""
        known = ", ".join(self._objects) or "none"
        close = (difflib.get_close_matches(name, list(self._objects), n=1, cutoff=0.6)
                 if isinstance(name, str) else [])
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"unknown {self.family} {name!r}; known: {known}{hint}"

    def names(self) -> tuple[str, ...]:
        """The registered names, in registration order."""
        return tuple(self._objects)

    def meta(self, name: str) -> Mapping[str, Any]:
        """The metadata ``name`` was registered with (read-only)."""
        if name not in self._meta:
            raise UnknownNameError(self.unknown(name))
        return self._meta[name]

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._objects)

    def __len__(self) -> int:
        return len(self._objects)

    def __contains__(self, name: object) -> bool:
        try:
            return name in self._objects
        except TypeError:  # an unhashable name
            return False

    def __repr__(self) -> str:
        return f"Registry({self.family!r}: {', '.join(self._objects)})"
