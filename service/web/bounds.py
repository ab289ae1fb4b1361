"""How large a request may be: the one home of the size bounds, for the protocol and the front.

A token path is at most ~1.6 KiB (512 + 1024 + the fixed parts); real clients send a few hundred
bytes of headers. Anything far larger is abuse, refused before it costs more.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from itertools import chain
from typing import Any

from service import errors

MAX_PATH_BYTES = 4096
MAX_HEADER_BYTES = 16384
MAX_HEADER_COUNT = 64
# What the protocol lets one request head (and any body after it) reach while it arrives: the
# request line and headers the front accepts, plus room for the separators between them.
MAX_HEAD_BYTES = MAX_PATH_BYTES + MAX_HEADER_BYTES + 4096


def header_bytes(headers: Iterable[tuple[bytes, bytes]]) -> int:
    return sum(map(len, chain.from_iterable(headers)))


def oversized(scope: Mapping[str, Any]) -> errors.BrokerError | None:
    """The precise 414 or 431 for a parsed head past a bound, or None."""
    if len(scope.get("raw_path") or scope["path"]) + len(scope["query_string"]) > MAX_PATH_BYTES:
        return errors.URITooLong(f"request URI over {MAX_PATH_BYTES} bytes")
    headers = scope["headers"]
    if len(headers) > MAX_HEADER_COUNT:
        return errors.HeadersTooLarge(f"over {MAX_HEADER_COUNT} request headers")
    if header_bytes(headers) > MAX_HEADER_BYTES:
        return errors.HeadersTooLarge(f"request headers over {MAX_HEADER_BYTES} bytes")
    return None


def head_too_large() -> errors.BrokerError:
    """What a head past MAX_HEAD_BYTES is told before the protocol closes its connection."""
    return errors.HeadersTooLarge(f"request head over {MAX_HEAD_BYTES} bytes")
