"""A Token, and the TokenSource interface that anything minting tokens implements."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Token:
    """One GetComputeAuthToken answer, validated. Its repr never shows the secret."""

    fleet_id: str
    fleet_arn: str
    compute_name: str
    compute_arn: str
    auth_token: str = field(repr=False)
    # Epoch seconds, as GameLift said: what callers are told. The cache never compares it with
    # a clock except once, on receipt, to learn the token's remaining lifetime.
    expires_at: float


class TokenSource(Protocol):
    """Anything that can mint a token for (fleet, compute). The cache implements it too."""

    async def fetch(self, fleet_id: str, compute_name: str) -> Token: ...
