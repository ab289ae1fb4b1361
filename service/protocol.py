"""uvicorn's httptools protocol, refusing an oversized request head while it is still arriving.

httptools buffers a request line and each header value in full before uvicorn sees them, so a
check after parsing would come after the memory is spent. This counts the bytes of each head
as they arrive and closes the connection past a bound; the precise 414/431 answers for heads
under it come from the Front.
"""

from __future__ import annotations

import json
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.front import MAX_HEADER_BYTES, MAX_PATH_BYTES

# The request line and headers the Front accepts, plus room for the separators between them.
MAX_HEAD_BYTES = MAX_PATH_BYTES + MAX_HEADER_BYTES + 4096

_REFUSAL = json.dumps(
    {"error": {"code": "HeadersTooLarge", "message": "request head too large"}}
).encode()


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._unparsed = 0  # bytes received since the last complete request head

    def data_received(self, data: bytes) -> None:
        # One override, not three: this runs for every request. The count restarts when a head
        # completes (uvicorn starts a new cycle then), so bytes after a head count towards the
        # next one: a body over the bound is refused too, and the broker takes no bodies. The
        # bytes of a chunk after a head that completes in it go uncounted, so the most ever
        # buffered is twice the bound.
        size = self._unparsed + len(data)
        if size > MAX_HEAD_BYTES:
            self._refuse()
            return
        self._unparsed = size
        cycle = self.cycle
        HttpToolsProtocol.data_received(self, data)
        if self.cycle is not cycle:
            self._unparsed = 0

    def _refuse(self) -> None:
        if self.transport.is_closing():
            return  # refused already; data may still arrive from the same read
        self.logger.warning("request head over %d bytes; connection closed", MAX_HEAD_BYTES)
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
            b"content-type: application/json\r\n"
            b"cache-control: no-store\r\n"
            b"content-length: " + str(len(_REFUSAL)).encode() + b"\r\n"
            b"connection: close\r\n\r\n" + _REFUSAL
        )
        self.transport.close()
