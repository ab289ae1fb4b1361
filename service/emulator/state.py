"""The emulator's fleets, computes and tokens, with GameLift's rules for them as methods."""

from __future__ import annotations

import uuid
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from service.emulator.errors import ApiError, conflict, invalid, not_found
from service.emulator.records import (
    MAX_COMPUTES,
    MAX_FLEETS,
    MAX_TOKENS,
    Compute,
    Fleet,
    IssuedToken,
    trim,
)
from service.names import Key

ACCOUNT = "123456789012"
# The GameLift Agent's comment: the service mints a new token only when under 15 minutes remain.
REUSE_WINDOW = 900.0


@dataclass
class Options:
    """How the emulated service behaves; the CLI and /_emulator/config set these."""

    strict: bool = False  # only `fleets` exist, and a compute only between Register and Deregister
    fleets: list[str] = field(default_factory=list)
    location: str = "custom-local"  # each fleet's custom location
    region: str = "us-west-2"
    token_lifetime: float = 3600.0
    token_reuse: bool = True  # hand back the same token until under REUSE_WINDOW remains
    refresh_lead: float = 300.0  # RefreshConnection goes out this long before a token expires
    # ... and again this often with the same token until a socket opens with it: a push can be
    # lost (C++ drops one that comes before ProcessReady, a socket can die with it queued).
    refresh_repeat: float = 60.0


class Registry:
    """Fleets, computes and issued tokens. Lenient mode makes fleets and computes on first use."""

    def __init__(self, options: Options, clock: Callable[[], float]) -> None:
        self.options = options
        self.clock = clock
        self.fleets: OrderedDict[str, Fleet] = OrderedDict()
        self.computes: OrderedDict[str, Compute] = OrderedDict()  # by "fleet/compute"
        self.tokens: OrderedDict[str, IssuedToken] = OrderedDict()  # by value, oldest first
        self._current: dict[Key, str] = {}  # the token GetComputeAuthToken hands back, per key
        self.issued: deque[str] = deque(maxlen=MAX_TOKENS)  # every token minted, revoked ones too
        for fleet_id in options.fleets:
            self.fleets[fleet_id] = Fleet(fleet_id, {options.location}, implicit=False)

    def arn(self, kind: str, name: str) -> str:
        return f"arn:aws:gamelift:{self.options.region}:{ACCOUNT}:{kind}/{name}"

    def fleet(self, fleet_id: str, unknown: Callable[[str], ApiError] = not_found) -> Fleet:
        """The fleet, made on first use in lenient mode; else `unknown`'s error: an action
        whose botocore model has no NotFoundException (RegisterCompute, ListCompute) passes
        `invalid`, so a client never meets an error its model does not know."""
        if found := self.fleets.get(fleet_id):
            return found
        if self.options.strict:
            raise unknown(f"Fleet {fleet_id} not found")
        fleet = self.fleets[fleet_id] = Fleet(fleet_id, {self.options.location}, implicit=True)
        trim(self.fleets, MAX_FLEETS, lambda f: f.implicit)
        return fleet

    def compute(self, fleet_id: str, name: str) -> Compute:
        """The compute, made on first use in lenient mode; NotFoundException otherwise."""
        fleet = self.fleet(fleet_id)
        if found := self.computes.get(f"{fleet_id}/{name}"):
            return found
        if self.options.strict:
            raise not_found(f"Compute {name} not found in fleet {fleet_id}")
        location = self._home(fleet)
        made = Compute(fleet_id, name, "127.0.0.1", None, location, None, self.clock(), True)
        return self._keep(made)

    def register(
        self,
        fleet_id: str,
        name: str,
        ip_address: str | None,
        dns_name: str | None,
        location: str | None,
        certificate_path: str | None,
    ) -> Compute:
        fleet = self.fleet(fleet_id, invalid)
        if self.options.strict:
            if ip_address is None:
                raise invalid("IpAddress is required to register a compute in an Anywhere fleet")
            if location is None:
                raise invalid("Location is required to register a compute in an Anywhere fleet")
            if location not in fleet.locations:
                raise invalid(f"Fleet {fleet_id} has no location {location}")
        else:
            # Lenient: the Quickstart registers with whatever it has; the fleet takes the location.
            location = location or self._home(fleet)
            fleet.locations.add(location)
        wanted = Compute(
            fleet_id,
            name,
            ip_address or "127.0.0.1",
            dns_name,
            location,
            certificate_path,
            self.clock(),
            implicit=False,
        )
        existing = self.computes.get(f"{fleet_id}/{name}")
        if existing is not None and not existing.implicit:
            if existing.same_attributes(wanted):
                return existing  # GameLift answers a repeated registration with the same compute
            raise conflict(f"Compute {name} is already registered with different attributes")
        return self._keep(wanted)

    def deregister(self, fleet_id: str, name: str) -> Compute:
        compute = self.compute(fleet_id, name)
        del self.computes[f"{fleet_id}/{name}"]
        self._current.pop((fleet_id, name), None)
        # Its tokens stop working at once: no new socket may open with them.
        for value in [v for v, t in self.tokens.items() if t.key == (fleet_id, name)]:
            del self.tokens[value]
        compute.status = "TERMINATING"
        return compute

    def list(self, fleet_id: str, location: str | None, status: str | None) -> list[Compute]:
        self.fleet(fleet_id, invalid)
        return [
            c
            for c in self.computes.values()
            if c.fleet_id == fleet_id
            and (location is None or c.location == location)
            and (status is None or c.status == status)
        ]

    def token(self, fleet_id: str, name: str, *, expired: bool = False) -> IssuedToken:
        """GetComputeAuthToken: the current token while enough of it remains, else a new one."""
        self.compute(fleet_id, name)
        key = (fleet_id, name)
        now = self.clock()
        if expired:  # the "expired" fault: a token that is already past its expiry
            return self.mint(key, now - 60)
        current = self.tokens.get(self._current.get(key, ""))
        if self.options.token_reuse and current and current.expires - now >= REUSE_WINDOW:
            return current
        return self.mint(key, now + self.options.token_lifetime)

    def mint(self, key: Key, expires: float | None = None) -> IssuedToken:
        if expires is None:
            expires = self.clock() + self.options.token_lifetime
        issued = IssuedToken(str(uuid.uuid4()), key, expires, self.clock())
        self.tokens[issued.value] = issued
        self.issued.append(issued.value)
        self._current[key] = issued.value
        for old in trim(self.tokens, MAX_TOKENS, lambda t: True):
            if self._current.get(old.key) == old.value:
                del self._current[old.key]
        return issued

    def check_token(self, value: str, fleet_id: str, name: str) -> IssuedToken:
        """The token, if this emulator issued it for that compute and it has not expired."""
        issued = self.tokens.get(value)
        if issued is None or issued.key != (fleet_id, name):
            raise ApiError("Forbidden", "the auth token was not issued for this compute", 403)
        if issued.expires <= self.clock():
            raise ApiError("Forbidden", "the auth token has expired", 403)
        if self.options.strict and f"{fleet_id}/{name}" not in self.computes:
            raise ApiError("Forbidden", f"compute {name} is not registered", 403)
        return issued

    def refresh_due(self, issued: IssuedToken) -> float:
        """When a socket opened with this token should get its RefreshConnection: refresh_lead
        before expiry, or halfway through a token that lives less than twice that."""
        return issued.expires - min(self.options.refresh_lead, (issued.expires - issued.issued) / 2)

    def _home(self, fleet: Fleet) -> str:
        """Where a compute goes when its registration names no location (lenient mode)."""
        locations = fleet.locations
        return self.options.location if self.options.location in locations else min(locations)

    def _keep(self, compute: Compute) -> Compute:
        self.computes[f"{compute.fleet_id}/{compute.name}"] = compute
        for dropped in trim(self.computes, MAX_COMPUTES, lambda c: c.implicit):
            self._current.pop((dropped.fleet_id, dropped.name), None)
        return compute
