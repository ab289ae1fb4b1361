"""uvicorn's httptools protocol, bounding each request head while it arrives, in size and time.

httptools buffers a request line and each header value in full before uvicorn sees them, so a
check after parsing would come after the memory is spent. This counts the bytes of each request
as they arrive and closes the connection past a bound; the precise 414/431 answers for heads
under it come from the Front. It also reports each connection's state to Connections, which
closes the ones whose head is late and keeps their number under the file limit.
"""

from __future__ import annotations

from typing import Any, ClassVar

# uvicorn's own protocol class: we override data_received and read self.scope and
# self.transport, which is why uvicorn's version is bounded in pyproject.toml.
import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.web.answers import error_body
from service.web.bounds import MAX_HEAD_BYTES, head_too_large
from service.web.connections import Connections

# The parser is fed at most this much at a time, so that a request beginning inside a large read
# (pipelined requests) restarts the count near where it begins.
SLICE_BYTES = 4096

_REFUSAL_BODY = error_body(head_too_large())
_REFUSAL = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"content-type: application/json\r\n"
    b"cache-control: no-store\r\n"
    b"content-length: " + str(len(_REFUSAL_BODY)).encode() + b"\r\n"
    b"connection: close\r\n\r\n" + _REFUSAL_BODY
)


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    # One per server, set on the subclass protocol_for() makes.
    registry: ClassVar[Connections]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Bytes of the request being received (its head, and any body after it), counted from
        # the slice it began in. The broker takes no bodies, so one past the bound is refused too.
        self._received = 0
        self._in_head = False  # between a request's first byte and its last header
        self._unanswered = 0  # heads complete whose responses are not (pipelining)

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self.registry.opened(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.registry.closed(self)
        super().connection_lost(exc)

    def close_connection(self) -> None:
        """Close for the registry: a late head, a head over budget, or room under the cap."""
        if self._in_head:
            # Free the half-sent head's lines now, not when the loop gets to connection_lost:
            # one loop iteration can read thousands of sockets first. No request holds them.
            self.headers.clear()
            self.url = b""
        if not self.transport.is_closing():
            self.transport.close()

    # These three run for every request: plain calls to the base class, not super().
    def on_message_begin(self) -> None:
        HttpToolsProtocol.on_message_begin(self)
        self._in_head = True

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._unanswered += 1
        self.registry.busy(self)
        if self.url[:1] != b"/" and self.url != b"*":
            self._host_from_target()
        HttpToolsProtocol.on_headers_complete(self)

    def _host_from_target(self) -> None:
        """An absolute-form target (GET http://evil.example/...) names the host, not Host.

        RFC 9112 3.2.2: the server MUST ignore Host and use the target's authority. uvicorn keeps
        only the path, so without this the Host check would pass on a Host of the caller's
        choosing. The authority becomes the one Host header, and the checks (and the front's
        memo of header sets) see it.
        """
        try:
            host = httptools.parse_url(self.url).host or b""
        except httptools.HttpParserInvalidURLError:
            host = b""  # uvicorn answers the bad target itself
        if b":" in host and not host.startswith(b"["):
            host = b"[" + host + b"]"  # an IPv6 literal, spelled as in a Host header
        self.headers[:] = [(name, value) for name, value in self.headers if name != b"host"]
        self.headers.append((b"host", host))

    def on_response_complete(self) -> None:
        HttpToolsProtocol.on_response_complete(self)
        self._unanswered -= 1
        if not self._unanswered and not self.transport.is_closing():
            self.registry.idle(self)

    def data_received(self, data: bytes) -> None:
        # One override, not three: this runs for every request. A request begins when uvicorn's
        # on_message_begin gives it a new scope; the count then restarts with the slice it began
        # in, so it over-counts by at most one slice and any number of small pipelined requests
        # pass, while one head past the bound is cut off before MAX_HEAD_BYTES + SLICE_BYTES.
        if len(data) <= SLICE_BYTES:
            self._feed(data)
            return
        for start in range(0, len(data), SLICE_BYTES):
            if self.transport.is_closing():
                return  # refused, or uvicorn answered a parse error: the rest is not ours
            self._feed(data[start : start + SLICE_BYTES])

    def _feed(self, data: bytes) -> None:
        scope = self.scope
        HttpToolsProtocol.data_received(self, data)
        received = len(data) if self.scope is not scope else self._received + len(data)
        if received > MAX_HEAD_BYTES:
            self._refuse()
        elif self._in_head:  # a head still arriving: its bytes count against the shared budget
            self.registry.heading(self, received)
        self._received = received

    def _refuse(self) -> None:
        if self.transport.is_closing():
            return  # refused already; data may still arrive from the same read
        self.logger.warning("request head over %d bytes; connection closed", MAX_HEAD_BYTES)
        self.transport.write(_REFUSAL)
        self.transport.close()


def protocol_for(connections: Connections) -> type[BoundedHttpToolsProtocol]:
    """The protocol class for one server: its connections share one registry."""

    class Protocol(BoundedHttpToolsProtocol):
        pass

    Protocol.registry = connections
    return Protocol
