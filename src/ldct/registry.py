"""Explicit name -> class registries (networks, methods, losses).

Register with the decorator; an unknown name raises :class:`LdctError` listing the known names.
Nothing is auto-imported from file names.

Specs and checked keyword arguments: a *spec* is a plain dict ``{"name": <registered name>, **kwargs}``
(or just the name as a string), e.g. ``{"name": "nafnet", "width": 32}``. :func:`check_kwargs` compares
keyword arguments with a callable's signature: an unknown key names itself, suggests the closest
allowed key and lists them all; values are coerced to the type of the default where that is safe (YAML
reads ``2e-4`` as a string, lists stand in for tuples). :func:`check_spec` checks a spec against a
registry. Building networks and losses from specs: :mod:`ldct.models.specs`, :mod:`ldct.losses.build`.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Mapping
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


_MISSING = inspect.Parameter.empty


def did_you_mean(key: str, allowed: list[str] | tuple[str, ...]) -> str:
    """' (did you mean 'x'?)' for the closest allowed key, or ''."""
    close = difflib.get_close_matches(key, list(allowed), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def unknown_key_error(key: str, where: str, allowed: list[str] | tuple[str, ...], path: Any = None) -> LdctError:
    """The one error for a mistyped key: names it, suggests a fix, lists the allowed keys."""
    full = f"{where}.{key}" if where else key
    listing = ", ".join(sorted(allowed)) if allowed else "(none)"
    return LdctError(f"unknown key {full!r}{did_you_mean(key, list(allowed))}; allowed: {listing}", path)


def signature_params(fn: Callable[..., Any]) -> dict[str, inspect.Parameter]:
    """Keyword-settable parameters of ``fn`` (a class: its ``__init__``), without ``self``/varargs."""
    target = fn.__init__ if inspect.isclass(fn) else fn  # type: ignore[misc]
    params = inspect.signature(target).parameters
    return {
        n: p
        for n, p in params.items()
        if n != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }


def accepts_var_kwargs(fn: Callable[..., Any]) -> bool:
    target = fn.__init__ if inspect.isclass(fn) else fn  # type: ignore[misc]
    return any(p.kind is p.VAR_KEYWORD for p in inspect.signature(target).parameters.values())


def coerce(value: Any, default: Any, where: str, path: Any = None) -> Any:
    """Coerce a YAML value to the type of ``default`` where safe; raise LdctError on a clear mismatch."""
    if default is None or default is _MISSING or value is None:
        return value
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        raise LdctError(f"{where} must be true or false, got {value!r}", path)
    if isinstance(default, (int, float)) and not isinstance(value, bool):
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise LdctError(f"{where} must be a number, got {value!r}", path) from None
        if isinstance(value, int) and abs(value) > 2**63:  # float() would overflow
            raise LdctError(f"{where} is out of range (a number with {value.bit_length()} bits)", path)
        if isinstance(value, (int, float)):
            if isinstance(default, float):
                return float(value)
            if float(value).is_integer():
                return int(value)
            raise LdctError(f"{where} must be a whole number, got {value!r}", path)
        if isinstance(default, float) or not isinstance(value, (list, tuple, dict, str)):
            raise LdctError(f"{where} must be a number, got {value!r}", path)
        return value  # an int default that also accepts sequences (e.g. per-stage depths)
    if isinstance(default, tuple) and isinstance(value, list):
        return tuple(value)
    return value


def check_kwargs(
    fn: Callable[..., Any], kwargs: Mapping[str, Any], where: str, path: Any = None, fill_defaults: bool = True
) -> dict[str, Any]:
    """Validate ``kwargs`` against ``fn``'s signature; return them coerced (and with defaults filled in).

    Raises :class:`LdctError` for an unknown key (with a suggestion) or a missing required one.
    """
    params = signature_params(fn)
    out: dict[str, Any] = {}
    open_kwargs = accepts_var_kwargs(fn)
    for key, value in kwargs.items():
        if key not in params:
            if open_kwargs:
                out[key] = value
                continue
            raise unknown_key_error(key, where, list(params), path)
        out[key] = coerce(value, params[key].default, f"{where}.{key}" if where else key, path)
    for name, p in params.items():
        if name in out:
            continue
        if p.default is _MISSING:
            raise LdctError(f"missing required key {(where + '.' if where else '') + name!r}", path)
        if fill_defaults:
            default = p.default
            out[name] = list(default) if isinstance(default, tuple) else default
    return out


def split_spec(spec: Any, where: str, path: Any = None) -> tuple[str, dict[str, Any]]:
    """``"name"`` or ``{"name": ..., **kwargs}`` -> (name, kwargs)."""
    if isinstance(spec, str):
        return spec, {}
    if isinstance(spec, Mapping):
        if "name" not in spec:
            raise LdctError(f"{where} needs a 'name' key (e.g. {{name: nafnet, width: 32}})", path)
        kwargs = {k: v for k, v in spec.items() if k != "name"}
        return str(spec["name"]), kwargs
    raise LdctError(f"{where} must be a name or a mapping with 'name', got {spec!r}", path)


def check_spec(registry: Any, spec: Any, where: str, path: Any = None) -> dict[str, Any]:
    """Validate a spec against ``registry``; return the resolved ``{"name": ..., **all kwargs}``."""
    name, kwargs = split_spec(spec, where, path)
    if name not in registry:
        known = registry.names()
        raise LdctError(
            f"{where}: unknown {registry.kind} {name!r}{did_you_mean(name, known)}; known: {', '.join(known)}",
            path,
        )
    resolved = check_kwargs(registry.get(name), kwargs, where, path)
    return {"name": name, **resolved}
