"""The gRPC server of both services: its limits from the settings, and requests that do not decode.

grpcio decodes a request before any handler runs, and answers UNKNOWN when the bytes are not a
valid message (a corrupt wire format, a string field that is not UTF-8). `register` adds a
servicer through its generated `add_*_to_server` function with every unary-request method's
decoder wrapped: such a request then reaches the method as `Undecodable`, and the caller gets
INVALID_ARGUMENT naming the field at fault when it can be found. Methods wrapped by
`servicekit.rpc.rpc` answer it themselves (so the call is logged and counted like any other);
other methods are wrapped here.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, TypeAlias

import grpc
import grpc.aio
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from servicekit.errors import InvalidArgument, to_grpc_status
from servicekit.settings import Settings

# Set on a method that answers `Undecodable` itself (servicekit.rpc does).
ANSWERS_UNDECODABLE = "answers_undecodable"
# Finding the field at fault walks the bytes in Python: only for requests up to this size.
_LOCATE_MAX_BYTES = 64 * 1024
_LOCATE_MAX_DEPTH = 32

Decoder = Callable[[bytes], Any]
# The stubs make these generic; at run time they are plain classes.
MethodHandler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
GenericHandler: TypeAlias = "grpc.GenericRpcHandler[Any, Any]"


class Undecodable:
    """What a method receives instead of a request whose bytes did not decode."""

    __slots__ = ("error",)

    def __init__(self, error: InvalidArgument) -> None:
        self.error = error


def server_options(settings: Settings) -> list[tuple[str, int]]:
    """The grpc.aio server options the settings give: message sizes, streams, connections."""

    def ms(seconds: float) -> int:
        return int(seconds * 1000)

    options = [
        ("grpc.max_receive_message_length", settings.grpc_max_receive_message_bytes),
        ("grpc.max_send_message_length", settings.grpc_max_send_message_bytes),
        ("grpc.max_concurrent_streams", settings.grpc_max_concurrent_streams),
        ("grpc.keepalive_time_ms", ms(settings.grpc_keepalive_seconds)),
        ("grpc.keepalive_timeout_ms", ms(settings.grpc_keepalive_timeout_seconds)),
        # Clients may keep an idle connection alive with pings this often without being cut
        # off with GOAWAY "too_many_pings".
        ("grpc.keepalive_permit_without_calls", 1),
        (
            "grpc.http2.min_ping_interval_without_data_ms",
            ms(settings.grpc_min_client_ping_seconds),
        ),
    ]
    if settings.grpc_max_connection_age_seconds > 0:
        options += [
            ("grpc.max_connection_age_ms", ms(settings.grpc_max_connection_age_seconds)),
            (
                "grpc.max_connection_age_grace_ms",
                ms(settings.grpc_max_connection_age_grace_seconds),
            ),
        ]
    return options


def server(settings: Settings, extra: Sequence[tuple[str, int]] = ()) -> grpc.aio.Server:
    """A grpc.aio server with the settings' limits (and `extra` options)."""
    return grpc.aio.server(options=[*server_options(settings), *extra])


def register(add: Callable[[Any, Any], None], servicer: object, target: grpc.aio.Server) -> None:
    """`add(servicer, target)` (a generated add_*_to_server), each method's decoding guarded."""
    add(servicer, _GuardedRegistration(target))


class _GuardedRegistration:
    """Stands in for the server in a generated add_*_to_server call."""

    def __init__(self, target: grpc.aio.Server) -> None:
        self._target = target

    def add_generic_rpc_handlers(self, handlers: Sequence[GenericHandler]) -> None:
        self._target.add_generic_rpc_handlers(tuple(_GuardedGeneric(h) for h in handlers))

    def add_registered_method_handlers(
        self, service: str, handlers: dict[str, MethodHandler]
    ) -> None:
        guarded = {name: _guard(handler) for name, handler in handlers.items()}
        self._target.add_registered_method_handlers(service, guarded)  # type: ignore[attr-defined]


class _GuardedGeneric(grpc.GenericRpcHandler):  # type: ignore[type-arg]
    """A generic handler whose method handlers come out guarded (each guarded once)."""

    def __init__(self, inner: GenericHandler) -> None:
        self._inner = inner
        self._guarded: dict[str, MethodHandler | None] = {}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> MethodHandler | None:
        method = handler_call_details.method
        if method not in self._guarded:
            found = self._inner.service(handler_call_details)
            self._guarded[method] = None if found is None else _guard(found)
        return self._guarded[method]


def _guard(handler: MethodHandler) -> MethodHandler:
    """`handler` with its request decoder guarded; streaming requests are left as they are."""
    decode = handler.request_deserializer
    if handler.request_streaming or decode is None:
        return handler
    guarded = _guarded_decoder(decode)
    serialize = handler.response_serializer
    if handler.response_streaming:
        stream = handler.unary_stream
        if stream is None:
            return handler
        if getattr(stream, ANSWERS_UNDECODABLE, False):
            pass
        elif inspect.isasyncgenfunction(stream):
            stream = _answering_stream(stream)
        elif inspect.iscoroutinefunction(stream):  # writes with context.write
            stream = _answering_unary(stream)
        else:
            return handler  # a synchronous generator: left as grpcio runs it
        return grpc.unary_stream_rpc_method_handler(
            stream, request_deserializer=guarded, response_serializer=serialize
        )
    unary = handler.unary_unary
    if unary is None:
        return handler
    if not getattr(unary, ANSWERS_UNDECODABLE, False):
        unary = _answering_unary(unary)
    return grpc.unary_unary_rpc_method_handler(
        unary, request_deserializer=guarded, response_serializer=serialize
    )


def _answering_unary(behavior: Callable[..., Any]) -> Callable[..., Any]:
    async def answer(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        if type(request) is Undecodable:
            await context.abort_with_status(to_grpc_status(request.error))  # type: ignore[attr-defined]
        return await behavior(request, context)

    return answer


def _answering_stream(behavior: Callable[..., AsyncIterator[Any]]) -> Callable[..., Any]:
    async def answer(
        request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        if type(request) is Undecodable:
            await context.abort_with_status(to_grpc_status(request.error))  # type: ignore[attr-defined]
        async for item in behavior(request, context):
            yield item

    return answer


def _guarded_decoder(decode: Decoder) -> Decoder:
    # The generated code passes `<Message>.FromString`, bound to the message class.
    message_class = getattr(decode, "__self__", None)
    descriptor: Descriptor | None = getattr(message_class, "DESCRIPTOR", None)

    def guarded(data: bytes) -> Any:
        try:
            return decode(data)
        except Exception:  # a decoder fails only on bad bytes: never the server's fault
            return Undecodable(undecodable_error(descriptor, data))

    return guarded


def undecodable_error(descriptor: Descriptor | None, data: bytes) -> InvalidArgument:
    """The INVALID_ARGUMENT for request bytes that did not decode as `descriptor`'s message."""
    field = None
    if descriptor is not None and len(data) <= _LOCATE_MAX_BYTES:
        field = _non_utf8_field(descriptor, data, "", 0)
    if field is not None:
        return InvalidArgument(field, "is not valid UTF-8; string fields must be UTF-8 text")
    name = descriptor.full_name if descriptor is not None else "request"
    return InvalidArgument(
        "request",
        f"the {len(data)} bytes received are not a valid {name} message (corrupt wire format"
        " or a string that is not UTF-8); build the request with the protos in protos/",
    )


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]  # IndexError on truncated input: the caller gives up
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _non_utf8_field(descriptor: Descriptor, data: bytes, prefix: str, depth: int) -> str | None:
    """The path of the first string field whose bytes are not UTF-8, or None if none is found
    (the wire format itself is corrupt, or the message nests too deep to follow)."""
    if depth > _LOCATE_MAX_DEPTH:
        return None
    pos = 0
    try:
        while pos < len(data):
            key, pos = _varint(data, pos)
            number, wire_type = key >> 3, key & 7
            if wire_type == 0:
                _, pos = _varint(data, pos)
            elif wire_type == 1:
                pos += 8
            elif wire_type == 5:
                pos += 4
            elif wire_type == 2:
                length, pos = _varint(data, pos)
                chunk, pos = data[pos : pos + length], pos + length
                field = descriptor.fields_by_number.get(number)
                found = None if field is None else _check_chunk(field, chunk, prefix, depth)
                if found is not None:
                    return found
            else:
                return None  # groups (proto2) or garbage
    except (IndexError, ValueError):
        return None
    return None


def _check_chunk(field: FieldDescriptor, chunk: bytes, prefix: str, depth: int) -> str | None:
    path = prefix + field.name
    if field.type == FieldDescriptor.TYPE_STRING:
        try:
            chunk.decode("utf-8")
        except UnicodeDecodeError:
            return path
        return None
    if field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type is not None:
        return _non_utf8_field(field.message_type, chunk, path + ".", depth + 1)
    return None
