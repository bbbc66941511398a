"""A plug-in's parameters: one dataclass, checked in one place.

Every defence, attack, dataset and model declares its parameters as a dataclass
whose fields carry their defaults, allowed range and a one-line doc
(:func:`param`). The defaults are the only ones: the registry turns them into
the Hydra config of the option (:mod:`fedlight.registry`), :func:`build_params`
checks what a run sets against them before any data is read or Ray starts, and
``docs/extending.md`` shows how to write one.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


class ConfigError(ValueError):
    """A config value that cannot work; the message is one line."""


def fail(key: str, value: Any, allowed: str, owner: str = "") -> typing.NoReturn:
    """Raise the one-line :class:`ConfigError` for ``key=value``."""
    where = f" ({owner})" if owner else ""
    raise ConfigError(f"{key}={value!r} is not allowed{where}: {allowed}")


def param(
    default: Any = dataclasses.MISSING,
    *,
    doc: str,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    choices: Sequence[str] | None = None,
    factory: Any = dataclasses.MISSING,
) -> Any:
    """A dataclass field with its doc and allowed values.

    ``low``/``high`` bound numbers (inclusive unless ``*_open``) and the items
    of a list of numbers; ``choices`` lists a string's allowed values.
    """
    meta = {
        "doc": doc,
        "low": low,
        "high": high,
        "low_open": low_open,
        "high_open": high_open,
        "choices": tuple(choices) if choices is not None else None,
    }
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class RunFacts:
    """What a plug-in's checks may compare with: the rest of the run's config."""

    num_clients: int = 20
    clients_per_round: int = 20
    num_rounds: int = 15
    num_classes: int = 10
    image_size: int = 32


class Params:
    """Base of every parameter dataclass: :meth:`check` relates fields to each
    other and to the run (``facts``) after each field passed its own range."""

    def check(self, facts: RunFacts, key: str, owner: str) -> None:
        """Raise :class:`ConfigError` (use :func:`fail`) for a combination that
        cannot work; ``key`` is the config prefix, e.g. ``defense``."""


@dataclass
class NoParams(Params):
    """A plug-in without parameters."""


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _type_ok(value: Any, hint: Any) -> bool:
    """Whether ``value`` (plain config data) fits the annotation ``hint``."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is Any:
        return True
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return _number(value)
    if hint is str:
        return isinstance(value, str)
    if origin in (list, tuple, Sequence):
        (item,) = typing.get_args(hint)[:1] or (Any,)
        return isinstance(value, (list, tuple)) and all(
            _type_ok(v, item) for v in value
        )
    if origin in (dict, Mapping):
        return isinstance(value, dict)
    return isinstance(value, hint) if isinstance(hint, type) else True


def _describe(hint: Any, bounds: str = "") -> str:
    """A reader's name for an annotation and its bounds: ``int | None`` with
    ``>= 0`` -> ``an integer >= 0 or null``."""
    names = {int: "an integer", float: "a number", bool: "true or false"}
    names[str] = "a string"
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        some = [_describe(h, bounds) for h in args if h is not type(None)]
        return " or ".join(some + (["null"] if type(None) in args else []))
    if origin in (list, tuple, Sequence):
        (item,) = typing.get_args(hint)[:1] or (Any,)
        inner = _describe(item).removeprefix("a ").removeprefix("an ")
        return f"a list of {inner}s" + (f", each {bounds}" if bounds else "")
    name = names.get(hint, getattr(hint, "__name__", str(hint)))
    return f"{name} {bounds}" if bounds else name


def _bounds(meta: Mapping[str, Any]) -> str:
    parts = []
    if meta["low"] is not None:
        parts.append(f"{'>' if meta['low_open'] else '>='} {meta['low']:g}")
    if meta["high"] is not None:
        parts.append(f"{'<' if meta['high_open'] else '<='} {meta['high']:g}")
    return " and ".join(parts)


def _in_range(value: Any, meta: Mapping[str, Any]) -> bool:
    low, high = meta["low"], meta["high"]
    if low is not None and (value <= low if meta["low_open"] else value < low):
        return False
    return not (
        high is not None and (value >= high if meta["high_open"] else value > high)
    )


def check_field(key: str, value: Any, hint: Any, meta: Mapping[str, Any], owner: str):
    """One field against its type, range and choices."""
    if not _type_ok(value, hint):
        fail(key, value, _describe(hint), owner)
    if value is None:
        return
    if meta.get("choices") is not None and value not in meta["choices"]:
        fail(key, value, "one of " + ", ".join(meta["choices"]), owner)
    bounds = _bounds(meta) if meta else ""
    if not bounds:
        return
    items = value if isinstance(value, (list, tuple)) else [value]
    for item in items:
        if _number(item) and not _in_range(item, meta):
            fail(key, value, _describe(hint, bounds), owner)


def fields_of(cls: type) -> list[tuple[dataclasses.Field, Any]]:
    """The dataclass fields of ``cls`` with their resolved annotations."""
    hints = typing.get_type_hints(cls)
    return [(f, hints[f.name]) for f in dataclasses.fields(cls)]


def defaults(cls: type) -> dict[str, Any]:
    """The declared defaults of a parameter dataclass, as plain config data."""
    return dataclasses.asdict(cls())


def build_params(
    cls: type,
    values: Mapping[str, Any],
    *,
    key: str,
    owner: str,
    facts: RunFacts | None = None,
) -> Any:
    """``cls(**values)`` after checking every key, type and range.

    ``key`` is the config prefix (``defense``), ``owner`` names the plug-in in
    errors (``defense=krum``). Unknown keys are refused, naming the allowed ones.
    """
    known = {f.name: (f, hint) for f, hint in fields_of(cls)}
    for name in values:
        if name not in known:
            allowed = ", ".join(known) or "none"
            fail(
                f"{key}.{name}",
                values[name],
                f"not a parameter; it has {allowed}",
                owner,
            )
    for name, value in values.items():
        f, hint = known[name]
        check_field(f"{key}.{name}", value, hint, f.metadata, owner)
    made = cls(**values)
    made.check(facts or RunFacts(), key, owner)
    return made
