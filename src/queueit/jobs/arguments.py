"""Job arguments: to JSON when sent, checked against the function's signature when received.

Sending turns pydantic models (``model_dump``), msgspec structs (``msgspec.to_builtins``) and
dataclasses into JSON values. Receiving binds the arguments to the signature (a missing or
unknown argument is an invalid message) and checks each against its type hint: plain types
(str, int, float, bool, None, list, dict, tuple, set), their generic forms, ``X | None``,
``Literal``, and model classes, which are built from the JSON object (``model_validate`` for
pydantic, ``msgspec.convert`` for msgspec, the constructor with each field checked for a
dataclass). Hints it does not understand, or cannot resolve, are not checked.
"""

from __future__ import annotations

import dataclasses
import inspect
import sys
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

from .envelope import InvalidMessage


def to_json_value(value: Any) -> Any:
    """``value`` with models turned into JSON values (pydantic models, msgspec structs,
    dataclasses), and tuples and sets into lists."""
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return dump(mode="json")
    msgspec = sys.modules.get("msgspec")
    if msgspec is not None and isinstance(value, msgspec.Struct):
        return msgspec.to_builtins(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_json_value(dataclasses.asdict(value))
    if isinstance(value, list | tuple | set | frozenset):
        return [to_json_value(v) for v in value]
    if isinstance(value, dict):
        return {k: to_json_value(v) for k, v in value.items()}
    return value


class Signature:
    """A job function's signature and hints, resolved once."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.signature = inspect.signature(fn)
        self.hints = resolved_hints(fn)

    def bind(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> inspect.BoundArguments:
        """The arguments converted (models built) and checked.

        Raises:
            InvalidMessage: they do not fit the signature or its type hints.
        """
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise InvalidMessage(f"the arguments do not fit the job's signature: {exc}") from None
        for name, value in bound.arguments.items():
            hint = self.hints.get(name)
            param = self.signature.parameters[name]
            if hint is None or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                continue
            bound.arguments[name] = convert(value, hint, name)
        return bound


def resolved_hints(fn: Callable[..., Any]) -> dict[str, Any]:
    """``fn``'s type hints, resolved; one that cannot be (a name defined only for type
    checkers) is left out, and the others are still checked."""
    try:
        return typing.get_type_hints(fn)
    except (NameError, TypeError):
        pass
    hints: dict[str, Any] = {}
    namespace = getattr(fn, "__globals__", {})
    for name, annotation in getattr(fn, "__annotations__", {}).items():
        try:  # the annotation's own text, as get_type_hints would evaluate it
            hints[name] = eval(annotation, namespace) if isinstance(annotation, str) else annotation
        except Exception:  # whatever the annotation's code raises: that one is not checked
            continue
    return hints


def convert(value: Any, hint: Any, where: str) -> Any:
    """``value`` checked against ``hint`` (and built, for a model class).

    Raises:
        InvalidMessage: it does not match.
    """
    if hint is Any or isinstance(hint, typing.TypeVar):
        return value
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        errors = []
        for option in typing.get_args(hint):
            try:
                return convert(value, option, where)
            except InvalidMessage as exc:
                errors.append(str(exc))
        raise InvalidMessage(f"{where}: {value!r:.80} matches none of {hint}")
    if origin is typing.Literal:
        if value in typing.get_args(hint):
            return value
        raise InvalidMessage(f"{where}: {value!r:.80} is not one of {typing.get_args(hint)}")
    if hint is None or hint is type(None):
        if value is None:
            return None
        raise InvalidMessage(f"{where}: expected null, got {type(value).__name__}")
    if origin in (list, tuple, set, frozenset) or hint in (list, tuple, set, frozenset):
        if not isinstance(value, list):
            raise InvalidMessage(f"{where}: expected a JSON array, got {type(value).__name__}")
        item = typing.get_args(hint)
        # tuple[X, Y], tuple[X, ...] or tuple[()] (whose args are empty too); not a bare Tuple
        if origin is tuple and hint is not typing.Tuple:  # noqa: UP006 (a value, not a hint)
            value = _tuple_items(value, item, where)
        elif item:
            value = [convert(v, item[0], f"{where}[{i}]") for i, v in enumerate(value)]
        kind = origin or hint
        if kind is tuple:
            return tuple(value)
        if kind in (set, frozenset):
            try:
                return kind(value)
            except TypeError:
                raise InvalidMessage(f"{where}: a set's items must be strings, numbers or null") from None
        return value
    if origin is dict or hint is dict or origin is Mapping:
        if not isinstance(value, dict):
            raise InvalidMessage(f"{where}: expected a JSON object, got {type(value).__name__}")
        pair = typing.get_args(hint)
        if len(pair) == 2:
            value = {k: convert(v, pair[1], f"{where}[{k!r}]") for k, v in value.items()}
        return value
    if isinstance(hint, type):
        return _convert_type(value, hint, where)
    return value  # a hint this checker does not understand


def _tuple_items(value: list[Any], items: tuple[Any, ...], where: str) -> list[Any]:
    """A ``tuple[X, ...]`` takes any number of X; a ``tuple[X, Y]`` exactly one X and one Y
    (``tuple[()]``, none)."""
    if len(items) == 2 and items[1] is Ellipsis:
        return [convert(v, items[0], f"{where}[{i}]") for i, v in enumerate(value)]
    if items == ((),):
        items = ()
    if len(value) != len(items):
        raise InvalidMessage(f"{where}: expected {len(items)} items, got {len(value)}")
    return [convert(v, hint, f"{where}[{i}]") for i, (v, hint) in enumerate(zip(value, items, strict=True))]


def _convert_type(value: Any, hint: type, where: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return _dataclass(value, hint, where)
    validate = getattr(hint, "model_validate", None)
    if callable(validate):  # a pydantic model
        try:
            return validate(value)
        except ValueError as exc:
            raise InvalidMessage(f"{where}: {exc}") from None
    msgspec = sys.modules.get("msgspec")
    if msgspec is not None and issubclass(hint, msgspec.Struct):
        try:
            return msgspec.convert(value, hint)
        except msgspec.ValidationError as exc:
            raise InvalidMessage(f"{where}: {exc}") from None
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float) and isinstance(value, bool):
        raise InvalidMessage(f"{where}: expected {hint.__name__}, got bool")
    if hint in (str, int, float, bool) and not isinstance(value, hint):
        raise InvalidMessage(f"{where}: expected {hint.__name__}, got {type(value).__name__}")
    return value


def _dataclass(value: Any, hint: type, where: str) -> Any:
    """A dataclass built from a JSON object, each field checked against its hint."""
    if not isinstance(value, dict):
        got = type(value).__name__
        raise InvalidMessage(f"{where}: expected a JSON object for {hint.__name__}, got {got}")
    fields = {f.name for f in dataclasses.fields(hint) if f.init}
    unknown = sorted(set(value) - fields)
    if unknown:
        raise InvalidMessage(f"{where}: {hint.__name__} has no field {unknown[0]!r}")
    hints = resolved_hints(hint)
    converted = {k: convert(v, hints.get(k, Any), f"{where}.{k}") for k, v in value.items()}
    try:
        return hint(**converted)
    except (TypeError, ValueError) as exc:  # a missing field, or the class's own check
        raise InvalidMessage(f"{where}: {hint.__name__}: {exc}") from None
