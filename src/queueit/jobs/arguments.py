"""Job arguments: to JSON when sent, checked against the function's signature when received.

Sending turns pydantic models (``model_dump``) and msgspec structs (``msgspec.to_builtins``)
into JSON values. Receiving binds the arguments to the signature (a missing or unknown
argument is an invalid message) and checks each against its type hint: plain types (str,
int, float, bool, None, list, dict, tuple), their generic forms, ``X | None``, ``Literal``,
and model classes, which are built from the JSON object (``model_validate`` for pydantic,
``msgspec.convert`` for msgspec). Hints it does not understand are not checked.
"""

from __future__ import annotations

import inspect
import sys
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

from .envelope import InvalidMessage


def to_json_value(value: Any) -> Any:
    """``value`` with models turned into JSON values (pydantic, msgspec, dataclass-like models)."""
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return dump(mode="json")
    msgspec = sys.modules.get("msgspec")
    if msgspec is not None and isinstance(value, msgspec.Struct):
        return msgspec.to_builtins(value)
    if isinstance(value, list | tuple):
        return [to_json_value(v) for v in value]
    if isinstance(value, dict):
        return {k: to_json_value(v) for k, v in value.items()}
    return value


class Signature:
    """A job function's signature and hints, resolved once."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.signature = inspect.signature(fn)
        try:
            self.hints = typing.get_type_hints(fn)
        except (NameError, TypeError):
            self.hints = {}  # hints that cannot be resolved are not checked

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
    if origin in (list, tuple, set, frozenset) or hint in (list, tuple):
        if not isinstance(value, list):
            raise InvalidMessage(f"{where}: expected a JSON array, got {type(value).__name__}")
        item = typing.get_args(hint)
        if item and origin is not tuple:
            value = [convert(v, item[0], f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(value) if (origin or hint) is tuple else value
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


def _convert_type(value: Any, hint: type, where: str) -> Any:
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
