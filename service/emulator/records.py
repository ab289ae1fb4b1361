"""The emulator's plain records (fleets, computes, tokens, processes, game sessions) and bounds."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from service.names import Key

# Every collection the emulator keeps has a ceiling, so a long demo stays the size it started.
MAX_FLEETS = 1_000
MAX_COMPUTES = 10_000
MAX_TOKENS = 10_000
MAX_PROCESSES = 2_000
MAX_GAME_SESSIONS = 2_000
MAX_PLAYER_SESSIONS = 1_000  # per game session
MAX_CALL_LOG = 10_000


@dataclass
class Fleet:
    fleet_id: str
    locations: set[str]
    implicit: bool  # made on first use (lenient mode); only these are ever dropped to bound


@dataclass
class Compute:
    fleet_id: str
    name: str
    ip_address: str
    dns_name: str | None
    location: str
    certificate_path: str | None
    created: float  # wall clock, epoch seconds
    implicit: bool  # made on first use (lenient mode); a RegisterCompute may replace it freely
    status: str = "ACTIVE"

    def same_attributes(self, other: Compute) -> bool:
        mine = (self.ip_address, self.dns_name, self.location, self.certificate_path)
        theirs = (other.ip_address, other.dns_name, other.location, other.certificate_path)
        return mine == theirs


@dataclass
class IssuedToken:
    value: str  # a secret: never in a log line, an exception message or state()
    key: Key
    expires: float  # wall clock, epoch seconds
    issued: float  # wall clock, epoch seconds


@dataclass
class Process:
    process_id: str
    fleet_id: str
    compute_name: str
    location: str
    idempotency_token: str
    auth_token: str  # the token of its live socket (a secret)
    sdk_language: str
    sdk_version: str
    generation: int = 0  # bumped by each accepted connect; a stale socket's close is ignored
    connected: bool = True
    status: str = "INITIALIZING"  # then ACTIVE (ProcessReady), TERMINATING, TERMINATED
    port: int | None = None
    log_paths: list[str] = field(default_factory=list)
    healthy: bool | None = None
    last_heartbeat: float | None = None  # wall clock
    game_session_arn: str | None = None
    # The tokens RefreshConnection pushes handed out and no socket has opened with yet (newest
    # last): a bearer of any of them may replace the live socket.
    refresh_tokens: list[str] = field(default_factory=list)
    refresh_pushed: float | None = None  # wall clock of the last RefreshConnection push

    def public(self) -> dict[str, Any]:
        return {
            "ProcessId": self.process_id,
            "FleetId": self.fleet_id,
            "ComputeName": self.compute_name,
            "Location": self.location,
            "Status": self.status,
            "Connected": self.connected,
            "SdkLanguage": self.sdk_language,
            "SdkVersion": self.sdk_version,
            "Port": self.port,
            "LogPaths": self.log_paths,
            "Healthy": self.healthy,
            "LastHeartbeat": self.last_heartbeat,
            "GameSessionId": self.game_session_arn,
        }


@dataclass
class GameSession:
    arn: str
    fleet_id: str
    location: str
    process_id: str
    compute_name: str
    ip_address: str
    dns_name: str | None
    port: int
    maximum_players: int
    name: str | None
    game_properties: list[dict[str, str]]
    creator_id: str | None
    data: str | None
    created: float
    status: str = "ACTIVATING"
    status_reason: str | None = None
    terminated: float | None = None
    policy: str = "ACCEPT_ALL"
    # The player sessions it accepted and has not removed, and when each was accepted (wall).
    player_sessions: OrderedDict[str, float] = field(default_factory=OrderedDict)


V = TypeVar("V")


def trim(
    items: OrderedDict[str, V],
    limit: int,
    droppable: Callable[[V], bool],
    evict_any: bool = True,
) -> list[V]:
    """Drop the oldest droppable items past `limit` (then, with evict_any, the oldest of any
    kind); return them."""
    dropped: list[V] = []
    if len(items) <= limit:
        return dropped
    for key in [k for k, v in items.items() if droppable(v)]:
        if len(items) <= limit:
            return dropped
        dropped.append(items.pop(key))
    while evict_any and len(items) > limit:
        dropped.append(items.popitem(last=False)[1])
    return dropped
