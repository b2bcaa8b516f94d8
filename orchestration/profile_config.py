"""Profile overrides as a typed Dagster config schema, generated from :class:`nyx.settings.PipelineProfile`.

The launchpad checks a run's config against the schema before the run starts: an override naming a setting that
does not exist (``chunking: {max_tokns: 120}``), a value of the wrong type (``max_tokens: "many"``) or a choice
outside a ``Literal`` (``launch: {kind: torchrunn}``) is an error in the launchpad ("Received unexpected config
entry ...") and ``dagster job launch`` refuses it, before any step runs. Range constraints (``ge=1``) and the
profile's own validators still run when the asset builds its profile, first thing in its step.

Every setting is optional (an override names only what it changes); a value given as ``null`` is "not overridden".
A setting whose type Dagster config cannot express (a union of several types) stays free-form (``Permissive``).
"""

from __future__ import annotations

import enum
import types
import typing
from typing import Any, Literal, Union

import dagster as dg
from pydantic import BaseModel, ConfigDict, create_model

_PRIMITIVES = (int, float, str, bool)


class _Overrides(dg.Config):
    """Base of the generated classes: built in Python (``NYX_PROFILE_OVERRIDES``, tests), an unknown setting is an
    error too, as it is in the launchpad."""

    model_config = ConfigDict(extra="forbid")


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _strip_optional(tp: Any) -> Any:
    if typing.get_origin(tp) in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _config_type(tp: Any, path: str, cache: dict[str, type]) -> Any:
    """The Dagster-compatible Python type for a profile field's type (``Any``-like types become ``dict`` only where
    the value is a mapping; otherwise the field is left out of the schema's checks as ``Permissive``)."""
    tp = _strip_optional(tp)
    origin = typing.get_origin(tp)
    if tp in _PRIMITIVES:
        return float if tp is float else tp
    if _is_model(tp):
        return overrides_model(tp, path, cache)
    if origin is Literal:
        values = typing.get_args(tp)
        if all(isinstance(v, str) for v in values):
            return enum.Enum(_name(path, "Choice"), {v: v for v in values}, type=str)
        return None
    if origin in (list, tuple, set, frozenset):
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        if args and all(_strip_optional(a) == _strip_optional(args[0]) for a in args):
            inner = _config_type(args[0], f"{path}_item", cache)
            if inner is not None:
                return list[inner]
        return None
    if origin is dict:
        key, value = (typing.get_args(tp) + (Any, Any))[:2]
        inner = _config_type(value, f"{path}_value", cache)
        return dict[str, inner] if key is str and inner is not None else dict
    return None  # Any, unions of several types: free-form


def _name(path: str, suffix: str) -> str:
    return "NyxOverrides" + "".join(p[:1].upper() + p[1:] for p in path.replace(".", "_").split("_") if p) + suffix


def overrides_model(model: type[BaseModel], path: str = "", cache: dict[str, type] | None = None) -> type[dg.Config]:
    """A ``dg.Config`` class with every field of ``model`` (a pydantic model), optional and ``None`` by
    default, nested settings as nested classes. Fields whose type Dagster config cannot express are free-form."""
    cache = {} if cache is None else cache
    name = _name(path or model.__name__, "")
    if name in cache:
        return cache[name]
    fields: dict[str, Any] = {}
    for field, annotation in ((name, f.annotation) for name, f in model.model_fields.items()):
        ctype = _config_type(annotation, f"{path}_{field}" if path else field, cache)
        fields[field] = ((ctype if ctype is not None else Any) | None, None)
    cls = create_model(
        name, __base__=_Overrides, __doc__=f"Overrides of {model.__name__} (every field optional).", **fields
    )
    cache[name] = cls
    return cls


def given(value: Any) -> Any:
    """The overrides a config object holds, as the nested dict ``PipelineProfile.with_overrides`` takes: only the
    settings given (``None`` means not overridden), enums as their values."""
    if isinstance(value, BaseModel):
        out = {}
        for k in type(value).model_fields:
            v = given(getattr(value, k))
            if v is not None:
                out[k] = v
        return out or None
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return {k: given(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [given(v) for v in value]
    return value
