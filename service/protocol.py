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
        self._head_bytes = 0
        self._in_head = True

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self._refuse()
                return
        super().data_received(data)

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._head_bytes = 0
        self._in_head = True

    def _refuse(self) -> None:
        self.logger.warning("request head over %d bytes; connection closed", MAX_HEAD_BYTES)
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
            b"content-type: application/json\r\n"
            b"cache-control: no-store\r\n"
            b"content-length: " + str(len(_REFUSAL)).encode() + b"\r\n"
            b"connection: close\r\n\r\n" + _REFUSAL
        )
        self.transport.close()
        self._in_head = False  # nothing more is read from this connection
