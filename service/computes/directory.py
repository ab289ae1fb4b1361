"""ComputeDirectory: what the compute parts need from GameLift, and the records it answers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class Registration:
    """RegisterCompute's input: what this host says about itself."""

    fleet_id: str
    compute_name: str
    ip_address: str | None
    dns_name: str | None
    location: str | None
    certificate_path: str | None


@dataclass(frozen=True, slots=True)
class ComputeRecord:
    """A Compute as GameLift describes it, checked; `endpoint` is None when it gave none."""

    fleet_id: str
    compute_name: str
    ip_address: str | None
    dns_name: str | None
    location: str | None
    status: str | None
    # GameLiftServiceSdkEndpoint: the websocket URL for InitSDK, checked by names'
    # is_valid_sdk_endpoint (so it can be written single-quoted in an env file).
    endpoint: str | None

    def matches(self, registration: Registration) -> bool:
        """True when this compute is the one `registration` would make. The Compute structure
        has no CertificatePath, so that attribute cannot be compared."""
        wanted = (registration.ip_address, registration.dns_name, registration.location)
        return (self.ip_address, self.dns_name, self.location) == wanted


@runtime_checkable
class ComputeDirectory(Protocol):
    """DescribeCompute, RegisterCompute and DeregisterCompute; errors are service.errors types."""

    async def describe(self, fleet_id: str, compute_name: str) -> ComputeRecord: ...

    async def register(self, registration: Registration) -> ComputeRecord: ...

    async def deregister(self, fleet_id: str, compute_name: str) -> None: ...
