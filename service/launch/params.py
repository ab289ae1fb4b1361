"""The broker's answer checked and turned into the five GAMELIFT_SDK_* variables, or refused.

Every SDK reads these variables, and C++ and C# take even an empty one over the values in code
(../shared/reference/SDK5.md), so each value must be present, a string, and well formed: a
partial answer starts nothing.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from service import names
from service.launch.client import BadAnswer

# The canonical hyphenated form, which is what the broker (and the Agent) hand out.
UUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
URL_MAX = 2048


def environment(answer: dict[str, object], fleet_id: str, compute_name: str) -> dict[str, str]:
    """The five variables from a 200 answer for (fleet_id, compute_name); BadAnswer otherwise.

    Messages name the field, never its value: the value may be the token.
    """
    values: dict[str, str] = {}
    for field in names.SDK_VARIABLES:
        value = answer.get(field)
        if field not in answer:
            raise BadAnswer(f"the broker's answer has no {field}")
        if not isinstance(value, str):
            raise BadAnswer(f"the broker's answer has a {type(value).__name__} as {field}")
        if not value:
            raise BadAnswer(f"the broker's answer has an empty {field}")
        values[field] = value
    # A broker answering for another compute is misconfigured or not ours: start nothing.
    if values["FleetId"] != fleet_id:
        raise BadAnswer("the broker's answer is for another fleet")
    if values["HostId"] != compute_name:
        raise BadAnswer("the broker's answer is for another compute")
    if names.AUTH_TOKEN_RE.fullmatch(values["AuthToken"]) is None:
        raise BadAnswer("the broker's AuthToken is not a GameLift auth token")
    if UUID_RE.fullmatch(values["ProcessId"]) is None:
        raise BadAnswer("the broker's ProcessId is not a UUID")
    if not _is_websocket_url(values["WebSocketUrl"]):
        raise BadAnswer("the broker's WebSocketUrl is not a ws:// or wss:// URL")
    return {names.SDK_VARIABLES[field]: value for field, value in values.items()}


def _is_websocket_url(value: str) -> bool:
    if len(value) > URL_MAX or any(not char.isprintable() or char.isspace() for char in value):
        return False
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018  # raises on a port that is not a number
    except ValueError:
        return False
    return parts.scheme in ("ws", "wss") and bool(parts.hostname)
