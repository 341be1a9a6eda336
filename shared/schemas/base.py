"""Message base class, the type/version registry, and the one decode entry point.

Every message is a frozen msgspec Struct tagged by ``type`` with an integer ``v``.
``decode`` accepts the current and every older registered version of a type and
upcasts old ones to the current struct. It raises a typed ``SchemaError`` for an
unknown type, an unknown version, or an invalid payload, never anything else.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import msgspec


class Message(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """Base of every stream message. Subclasses set ``tag=`` and may override ``v``."""

    v: int = 1
    VERSION: ClassVar[int] = 1


M = TypeVar("M", bound=type[Message])


class SchemaError(Exception):
    """A message that cannot be decoded. ``code`` is a stable reason code."""

    code = "SCHEMA_ERROR"

    def __init__(self, detail: str) -> None:
        super().__init__(f"{self.code}: {detail}")
        self.detail = detail


class UnknownType(SchemaError):
    code = "UNKNOWN_TYPE"


class UnknownVersion(SchemaError):
    code = "UNKNOWN_VERSION"


class InvalidPayload(SchemaError):
    code = "INVALID_PAYLOAD"


class _Header(msgspec.Struct):
    type: str
    v: int = 1


# (type, version) -> struct class; type -> current version; (type, old_v) -> upcaster
_REGISTRY: dict[tuple[str, int], type[Message]] = {}
_CURRENT: dict[str, int] = {}
_UPCASTERS: dict[tuple[str, int], Callable[[Any], Any]] = {}
_DECODERS: dict[type[Message], msgspec.json.Decoder] = {}
_ENCODER = msgspec.json.Encoder()
_HEADER_DECODER = msgspec.json.Decoder(_Header)


def type_name(cls: type[Message]) -> str:
    return cls.__struct_config__.tag  # type: ignore[return-value]


def register(cls: M) -> M:
    """Register a message class as the current version of its type."""
    name = type_name(cls)
    version = cls.VERSION
    _REGISTRY[(name, version)] = cls
    _CURRENT[name] = max(_CURRENT.get(name, 0), version)
    _DECODERS[cls] = msgspec.json.Decoder(cls)
    return cls


def register_legacy(cls: type[Message], upcast: Callable[[Any], Any]) -> None:
    """Register an older version of a type with the function that lifts it one version up."""
    name = type_name(cls)
    _REGISTRY[(name, cls.VERSION)] = cls
    _UPCASTERS[(name, cls.VERSION)] = upcast
    _DECODERS[cls] = msgspec.json.Decoder(cls)


def registered_types() -> dict[str, int]:
    """type name -> current version."""
    return dict(sorted(_CURRENT.items()))


def current_class(name: str) -> type[Message]:
    return _REGISTRY[(name, _CURRENT[name])]


def encode(msg: Message) -> bytes:
    """JSON bytes of a message (includes ``type`` and ``v``)."""
    return _ENCODER.encode(msg)


def decode(data: bytes | str, expect: type[Message] | tuple[type[Message], ...] | None = None) -> Message:
    """Decode any registered message, upcasting older versions to the current one."""
    if isinstance(data, str):
        data = data.encode()
    try:
        header = _HEADER_DECODER.decode(data)
    except msgspec.DecodeError as exc:
        raise InvalidPayload(f"not a message: {exc}") from None
    if header.type not in _CURRENT:
        raise UnknownType(f"type={header.type!r}")
    cls = _REGISTRY.get((header.type, header.v))
    if cls is None:
        raise UnknownVersion(f"type={header.type!r} v={header.v} (current v={_CURRENT[header.type]})")
    try:
        msg: Any = _DECODERS[cls].decode(data)
    except msgspec.DecodeError as exc:  # ValidationError is a subclass
        raise InvalidPayload(f"type={header.type!r} v={header.v}: {exc}") from None
    version = header.v
    while version < _CURRENT[header.type]:
        msg = _UPCASTERS[(header.type, version)](msg)
        version += 1
    if expect is not None and not isinstance(msg, expect):
        raise UnknownType(f"type={header.type!r} is not expected here")
    return msg


T = TypeVar("T")


def replace(msg: T, **changes: Any) -> T:
    return msgspec.structs.replace(msg, **changes)  # type: ignore[type-var]


def type_name_of(msg: Message) -> str:
    return type(msg).__struct_config__.tag  # type: ignore[return-value]
