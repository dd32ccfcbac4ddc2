"""Command-line flags generated from a config dataclass: its fields are the one place that names, types,
defaults, choices and help of a CLI's settings are written.

A field becomes ``--field-name`` (underscores as dashes) of the field's type (``int``, ``float``, ``str``, or
``bool`` as ``--x/--no-x``; ``T | None`` as ``T``; ``list[T]`` as a flag given once per item), with the help and
choices of :func:`setting`. Every flag
defaults to None, meaning "not given", so a config file's values survive unless a flag overrides them:
:func:`given` returns only what the user typed.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any, Sequence

_SCALARS = (int, float, str)


def setting(default: Any = dataclasses.MISSING, help: str = "", *, choices: Sequence | None = None,
            aliases: Sequence[str] = (), metavar: str | None = None, cli: bool = True,
            default_factory: Any = dataclasses.MISSING):
    """A dataclass field with what its command-line flag needs (``cli=False``: no flag)."""
    metadata = {"help": help, "choices": tuple(choices) if choices is not None else None, "aliases": tuple(aliases),
                "metavar": metavar, "cli": cli}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def _flag_type(annotation) -> tuple[type, bool]:
    """(``int``, ``float``, ``str`` or ``bool``, whether the flag repeats) from an annotation, unwrapping
    ``T | None`` and ``list[T]``."""
    if typing.get_origin(annotation) is list:
        (item,) = typing.get_args(annotation)
        if item not in _SCALARS:
            raise TypeError(f"no flag for the annotation {annotation}")
        return item, True
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"no flag for the annotation {annotation}")
        annotation = args[0]
    if annotation is bool or annotation in _SCALARS:
        return annotation, False
    raise TypeError(f"no flag for the annotation {annotation}")


def add_config_flags(parser: argparse.ArgumentParser, config_cls) -> None:
    """Add a flag for every field of the dataclass ``config_cls`` declared with :func:`setting` (or plain)."""
    hints = typing.get_type_hints(config_cls)
    for f in dataclasses.fields(config_cls):
        meta = f.metadata
        if not meta.get("cli", True):
            continue
        kind, repeated = _flag_type(hints[f.name])
        flags = ["--" + f.name.replace("_", "-"), *meta.get("aliases", ())]
        help_text = meta.get("help", "")
        if f.default is not dataclasses.MISSING and f.default is not None and kind is not bool:
            help_text = f"{help_text} (default: {f.default})" if help_text else f"default: {f.default}"
        kwargs: dict = {"dest": f.name, "default": None, "help": help_text or None}
        if kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = kind
            if repeated:
                kwargs["action"] = "append"
            if meta.get("choices"):
                kwargs["choices"] = meta["choices"]
            if meta.get("metavar"):
                kwargs["metavar"] = meta["metavar"]
        parser.add_argument(*flags, **kwargs)


def given(args: argparse.Namespace, config_cls) -> dict:
    """The config fields the user gave on the command line (flags left out are None in ``args``)."""
    names = {f.name for f in dataclasses.fields(config_cls)}
    return {k: v for k, v in vars(args).items() if k in names and v is not None}
