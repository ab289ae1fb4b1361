"""Server processes and game sessions, with GameLift's rules for them as methods.

The websocket adapter calls the process methods for the frames a game server sends; the control
plane calls create_game_session. Pushes to a process go out through `push`, which the websocket
adapter provides, so a rule here never knows about frames.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from service.emulator.errors import ApiError, invalid, not_found
from service.emulator.records import (
    MAX_GAME_SESSIONS,
    MAX_PLAYER_SESSIONS,
    MAX_PROCESSES,
    GameSession,
    Process,
    trim,
)
from service.emulator.state import Registry

PLAYER_SESSION_STATUSES = ("RESERVED", "ACTIVE", "COMPLETED", "TIMEDOUT")

Push = Callable[[str, str, dict[str, Any]], bool]  # (process id, action, fields) -> sent


def _no_push(process_id: str, action: str, fields: dict[str, Any]) -> bool:
    return False


class Sessions:
    """Processes by id and game sessions by ARN, both bounded, on top of the registry."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.processes: OrderedDict[str, Process] = OrderedDict()
        self.game_sessions: OrderedDict[str, GameSession] = OrderedDict()
        self._by_idempotency: OrderedDict[str, str] = OrderedDict()  # token -> game session ARN
        self.push: Push = _no_push

    # -- the websocket's connect ------------------------------------------------------------

    def connect(
        self,
        process_id: str,
        fleet_id: str,
        compute_name: str,
        token: str,
        idempotency_token: str,
        sdk_language: str,
        sdk_version: str,
    ) -> Process:
        """Accept a socket for the process, or raise a 403 ApiError; bumps its generation."""
        self.registry.check_token(token, fleet_id, compute_name)
        compute = self.registry.compute(fleet_id, compute_name)
        existing = self.processes.get(process_id)
        if existing is not None and existing.connected:
            refreshed = token in existing.refresh_tokens
            same_socket = idempotency_token == existing.idempotency_token
            if (existing.fleet_id, existing.compute_name) != (fleet_id, compute_name) or not (
                refreshed or same_socket
            ):
                raise ApiError("Forbidden", f"process {process_id} is already connected", 403)
        # The same execution reconnects with its IdempotencyToken (after any close) or with a
        # token a RefreshConnection gave it. Anything else on a closed socket's process id is
        # a new execution (the old one crashed): it starts afresh, as the Agent's would.
        same_execution = (
            existing is not None
            and existing.status != "TERMINATED"
            and (existing.fleet_id, existing.compute_name) == (fleet_id, compute_name)
            and (
                existing.connected
                or idempotency_token == existing.idempotency_token
                or token in existing.refresh_tokens
            )
        )
        if existing is None and len(self.processes) >= MAX_PROCESSES:
            # Room only by dropping a closed socket's process: never a connected one.
            trim(self.processes, MAX_PROCESSES - 1, lambda p: not p.connected, evict_any=False)
            if len(self.processes) >= MAX_PROCESSES:
                raise ApiError(
                    "ServiceUnavailable", f"{MAX_PROCESSES} processes are connected", 503
                )
        if existing is None or not same_execution:
            process = Process(
                process_id,
                fleet_id,
                compute_name,
                compute.location,
                idempotency_token,
                token,
                sdk_language,
                sdk_version,
            )
            if existing is not None:
                self._end_game_session(existing)
                # A close of the dead execution's socket that comes late must change nothing.
                process.generation = existing.generation
            self.processes[process_id] = process
            self.processes.move_to_end(process_id)
        else:
            process = existing
            if token in process.refresh_tokens:
                # Used, with those before it; a newer one may still be on its way to the SDK.
                used = process.refresh_tokens.index(token)
                process.refresh_tokens = process.refresh_tokens[used + 1 :]
            # A reconnect with any other token did not act on a push (or never got it): the
            # next one goes out as soon as it is due, not a repeat interval later.
            process.refresh_pushed = None
            process.idempotency_token, process.auth_token = idempotency_token, token
            process.connected = True
        process.generation += 1
        return process

    def disconnect(self, process_id: str, generation: int) -> None:
        process = self.processes.get(process_id)
        # A socket that a RefreshConnection reconnect replaced closes late: that changes nothing.
        if process is not None and process.generation == generation:
            process.connected = False

    def refresh_wait(self, process_id: str) -> float | None:
        """Seconds until the process's next RefreshConnection push is due (0 or less: now); None
        while it is not ACTIVE (C++ drops a push before ProcessReady) or is gone."""
        process = self.processes.get(process_id)
        if process is None or not process.connected or process.status != "ACTIVE":
            return None
        now = self.registry.clock()
        if process.refresh_pushed is not None:
            # A floor, so a repeat of 0 cannot turn the timer into a busy loop.
            return process.refresh_pushed + max(self.registry.options.refresh_repeat, 0.1) - now
        issued = self.registry.tokens.get(process.auth_token)
        if issued is None:
            return None  # revoked with its compute: the refresh below would find none either
        return self.registry.refresh_due(issued) - now

    def refresh(self, process_id: str) -> str | None:
        """The token for a RefreshConnection push now: the one pushed before while it has time
        left (a repeat must not strand a socket that is opening with it), else a new one.
        None if the process or its compute is gone."""
        process = self.processes.get(process_id)
        if process is None or not process.connected or process.status == "TERMINATED":
            return None
        key = (process.fleet_id, process.compute_name)
        if f"{key[0]}/{key[1]}" not in self.registry.computes:
            return None
        now, tokens = self.registry.clock(), self.registry.tokens
        outstanding = [t for t in process.refresh_tokens if t in tokens and tokens[t].expires > now]
        latest = tokens[outstanding[-1]] if outstanding else None
        if latest is None or self.registry.refresh_due(latest) <= now:
            latest = self.registry.mint(key)
            outstanding.append(latest.value)
        process.refresh_tokens = outstanding
        process.refresh_pushed = now
        return latest.value

    # -- the frames a game server sends -------------------------------------------------------

    def process(self, process_id: str) -> Process:
        if found := self.processes.get(process_id):
            return found
        raise not_found(f"process {process_id} is not known")

    def activate(self, process_id: str, port: int, log_paths: list[str]) -> None:
        process = self.process(process_id)
        if process.status in ("TERMINATING", "TERMINATED"):
            raise invalid(f"process {process_id} is ending")
        process.status, process.port, process.log_paths = "ACTIVE", port, log_paths

    def heartbeat(self, process_id: str, healthy: bool) -> None:
        process = self.process(process_id)
        process.healthy, process.last_heartbeat = healthy, self.registry.clock()

    def activate_game_session(self, process_id: str, arn: str) -> None:
        session = self._session_of(process_id, arn)
        if session.status != "ACTIVATING":
            raise invalid(f"game session {arn} is {session.status}, not ACTIVATING")
        session.status = "ACTIVE"

    def terminate(self, process_id: str) -> None:
        process = self.process(process_id)
        process.status = "TERMINATED"
        self._end_game_session(process)

    def _end_game_session(self, process: Process) -> None:
        session = self.game_sessions.get(process.game_session_arn or "")
        if session is not None and session.status in ("ACTIVATING", "ACTIVE"):
            session.status, session.terminated = "TERMINATED", self.registry.clock()

    def player_session(self, process_id: str, arn: str, player_session_id: str, add: bool) -> None:
        session = self._session_of(process_id, arn)
        if add:
            if session.policy == "DENY_ALL" and player_session_id not in session.player_sessions:
                raise invalid(f"game session {arn} accepts no new player sessions")
            session.player_sessions.setdefault(player_session_id, self.registry.clock())
            trim(session.player_sessions, MAX_PLAYER_SESSIONS, lambda v: True)
        elif session.player_sessions.pop(player_session_id, None) is None:
            raise not_found(f"player session {player_session_id} is not in {arn}")

    def describe_player_sessions(
        self,
        process_id: str,
        arn: str | None,
        player_session_id: str | None,
        player_id: str | None,
        status: str | None,
    ) -> list[tuple[GameSession, str]]:
        """(game session, player session id) for each recorded player session in the process's
        fleet that matches. They are the ones it accepted and has not removed, so all ACTIVE;
        the emulator never learns a player id (no CreatePlayerSession), so PlayerId matches none.
        """
        if arn is None and player_session_id is None and player_id is None:
            raise invalid("One of GameSessionId, PlayerSessionId or PlayerId is required")
        if status is not None and status not in PLAYER_SESSION_STATUSES:
            raise invalid(f"PlayerSessionStatusFilter must be one of {PLAYER_SESSION_STATUSES}")
        fleet_id = self.process(process_id).fleet_id
        if player_id is not None or status not in (None, "ACTIVE"):
            return []
        sessions = [self.game_sessions.get(arn)] if arn is not None else self.game_sessions.values()
        return [
            (session, player)
            for session in sessions
            if session is not None and session.fleet_id == fleet_id
            for player in session.player_sessions
            if player_session_id is None or player == player_session_id
        ]

    def set_policy(self, process_id: str, arn: str, policy: str) -> None:
        if policy not in ("ACCEPT_ALL", "DENY_ALL"):
            raise invalid("PlayerSessionPolicy must be ACCEPT_ALL or DENY_ALL")
        self._session_of(process_id, arn).policy = policy

    def _session_of(self, process_id: str, arn: str) -> GameSession:
        process = self.process(process_id)
        session = self.game_sessions.get(arn)
        if session is None or process.game_session_arn != arn:
            raise not_found(f"game session {arn} is not hosted by process {process_id}")
        return session

    # -- the control plane's side --------------------------------------------------------------

    def create_game_session(
        self,
        fleet_id: str,
        location: str | None,
        maximum_players: int,
        name: str | None,
        game_properties: list[dict[str, str]],
        creator_id: str | None,
        session_id: str | None,
        idempotency_token: str | None,
        data: str | None,
    ) -> GameSession:
        fleet = self.registry.fleet(fleet_id)
        if location is not None and location not in fleet.locations:
            raise invalid(f"Fleet {fleet_id} has no location {location}")
        wanted = idempotency_token or session_id
        known = self.game_sessions.get(self._by_idempotency.get(wanted or "", ""))
        if known is not None:
            return known  # the same request again: the same game session
        for process in self.processes.values():
            compute = self.registry.computes.get(f"{process.fleet_id}/{process.compute_name}")
            if (
                process.fleet_id == fleet_id
                and process.connected
                and process.status == "ACTIVE"
                and process.game_session_arn is None
                and process.port is not None
                and compute is not None
                and (location is None or compute.location == location)
            ):
                break
        else:
            raise ApiError(
                "FleetCapacityExceededException",
                f"No available process in fleet {fleet_id} to host a game session",
            )
        short = wanted or f"gsess-{uuid.uuid4()}"
        arn = f"arn:aws:gamelift:{self.registry.options.region}::gamesession/{fleet_id}/"
        arn += f"{compute.location}/{short}"
        session = GameSession(
            arn,
            fleet_id,
            compute.location,
            process.process_id,
            compute.name,
            compute.ip_address,
            compute.dns_name,
            process.port,
            maximum_players,
            name,
            game_properties,
            creator_id,
            data,
            self.registry.clock(),
        )
        self.game_sessions[arn] = session
        trim(self.game_sessions, MAX_GAME_SESSIONS, lambda s: s.status == "TERMINATED")
        if wanted:
            self._by_idempotency[wanted] = arn
            trim(self._by_idempotency, MAX_GAME_SESSIONS, lambda a: a not in self.game_sessions)
        process.game_session_arn = arn
        fields = {
            "GameSessionId": arn,
            "GameSessionName": name or "",
            "GameSessionData": data or "",
            "MatchmakerData": "",
            "MaximumPlayerSessionCount": maximum_players,
            "Port": process.port,
            "IpAddress": compute.ip_address,
            "DnsName": compute.dns_name or "",
            "GameProperties": {p["Key"]: p["Value"] for p in game_properties},
        }
        if not self.push(process.process_id, "CreateGameSession", fields):
            session.status, session.status_reason = "ERROR", "INTERRUPTED"
            process.game_session_arn = None
            raise ApiError("FleetCapacityExceededException", "The chosen process went away")
        return session

    def describe_game_sessions(
        self, fleet_id: str | None, arn: str | None, location: str | None, status: str | None
    ) -> list[GameSession]:
        if arn is not None:
            found = self.game_sessions.get(arn)
            if found is None:
                raise not_found(f"Game session {arn} not found")
            return [found]
        assert fleet_id is not None  # the adapter asks for one of the two
        self.registry.fleet(fleet_id)
        return [
            s
            for s in self.game_sessions.values()
            if s.fleet_id == fleet_id
            and (location is None or s.location == location)
            and (status is None or s.status == status)
        ]

    def end_compute(self, fleet_id: str, compute_name: str, termination_time_ms: int) -> int:
        """DeregisterCompute's side: TerminateProcess to each connected process; the count."""
        pushed = 0
        for process in list(self.processes.values()):
            if (process.fleet_id, process.compute_name) != (fleet_id, compute_name):
                continue
            if process.connected and process.status != "TERMINATED":
                process.status = "TERMINATING"
                fields = {"TerminationTime": termination_time_ms}
                pushed += self.push(process.process_id, "TerminateProcess", fields)
        return pushed
