"""Experiment configurations as frozen dataclasses, and the command line derived from them.

Every field of a config dataclass becomes an option (``n_steps`` -> ``--n-steps``), so nothing is
reachable only from Python. Fields named as *grid axes* (e.g. ``method``, ``n``, ``seed``) take
several values and select cells of the grid; every other field takes one value and overrides the
protocol of every selected cell. A field's ``metadata={"help": ...}`` becomes the option's help.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = ["add_config_arguments", "config_dict", "config_from_dict", "parse_config_arguments"]


def _unwrap(tp: Any) -> tuple[Any, bool]:
    """``(base type, optional)`` of an annotation such as ``float | None``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _parser_for(tp: Any) -> tuple[Any, Sequence | None, bool]:
    """``(type callable, choices, is_sequence)`` for an annotation."""
    tp, optional = _unwrap(tp)
    origin = typing.get_origin(tp)
    if origin is tuple:
        conv, choices, _ = _parser_for(typing.get_args(tp)[0])
        return conv, choices, True
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        return type(choices[0]), choices, False
    if tp is bool:
        return _bool, None, False
    if optional:
        base = tp

        def none_or(text: str, base=base):
            return None if text.lower() == "none" else base(text)

        none_or.__name__ = getattr(base, "__name__", "value")
        return none_or, None, False
    return tp, None, False


def _bool(text: str) -> bool:
    low = text.lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def add_config_arguments(
    parser: argparse.ArgumentParser,
    cls: type,
    *,
    axes: Iterable[str] = (),
    exclude: Iterable[str] = (),
    title: str | None = None,
) -> None:
    """Add one option per field of the dataclass ``cls`` to ``parser``.

    An option that is not given leaves no attribute (``argparse.SUPPRESS``), so
    :func:`parse_config_arguments` tells overrides from defaults (``--tol none`` gives ``None``).
    Axis fields take ``nargs="+"``.
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"cls must be a dataclass, got {cls!r}")
    axes, exclude = set(axes), set(exclude)
    hints = typing.get_type_hints(cls)
    group = parser.add_argument_group(title or f"{cls.__name__} fields")
    for f in dataclasses.fields(cls):
        if f.name in exclude or not f.init:
            continue
        conv, choices, seq = _parser_for(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else None
        if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        axis = f.name in axes
        help_text = f.metadata.get("help", "")
        kind = "grid axis: select these values" if axis else f"default {default!r}"
        group.add_argument(
            "--" + f.name.replace("_", "-"),
            dest=f.name,
            type=conv,
            choices=choices,
            nargs="+" if (axis or seq) else None,
            default=argparse.SUPPRESS,
            metavar=f.name.upper(),
            help=f"{help_text} ({kind})".strip(),
        )


def parse_config_arguments(
    args: argparse.Namespace, cls: type, *, axes: Iterable[str] = ()
) -> tuple[dict[str, Any], dict[str, list]]:
    """Split parsed options into ``(overrides, selection)``.

    ``overrides``: the non-axis fields given on the command line (tuples for sequence fields).
    ``selection``: axis -> list of selected values, for the axes given.
    """
    axes = set(axes)
    overrides: dict[str, Any] = {}
    selection: dict[str, list] = {}
    for f in dataclasses.fields(cls):
        if not hasattr(args, f.name):
            continue
        value = getattr(args, f.name)
        if f.name in axes:
            selection[f.name] = list(value)
        else:
            overrides[f.name] = tuple(value) if isinstance(value, list) else value
    return overrides, selection


def config_dict(config: Any, exclude: Iterable[str] = (),
                added: Mapping[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    """A JSON-ready dict of a config dataclass (tuples as lists), without ``exclude``.

    ``added``: fields added to the dataclass after results were recorded, mapped to their
    defaults; a field at its default is left out, so the identity of every recorded run (which
    never had the field) stays the same.
    """
    exclude = set(exclude) | {k for k, v in (added or {}).items() if getattr(config, k) == v}

    def plain(v: Any) -> Any:
        if isinstance(v, tuple | list):
            return [plain(x) for x in v]
        if isinstance(v, Mapping):
            return {k: plain(x) for k, x in v.items()}
        return v

    return {
        f.name: plain(getattr(config, f.name))
        for f in dataclasses.fields(config)
        if f.name not in exclude
    }


def config_from_dict(cls: type, data: Mapping[str, Any]) -> Any:
    """Rebuild a config dataclass from a stored dict (lists back to tuples; keys that are not
    fields, such as derived values stored beside them, are ignored)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in names})
