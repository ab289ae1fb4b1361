"""CPU µs per token request for checking a caller identity: the guard with a ServiceAccount
token (RS256, ES256) against the same guard with no identity, in one process.

    python bench/identity.py              # 9 interleaved rounds of 2,000 checks each
    python bench/identity.py --rounds 1   # quick (CI)

What it measures is the checked path: a request whose (path, header set) the hit path has not
remembered, such as a pod's first request with a newly rotated token. Repeated requests with
the same token are answered from the front's memo and never reach the verifier.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo, for service, tests

from service.config import Settings
from service.web.guard import RequestGuard
from tests.identity_helpers import AUDIENCE, ISSUER, Pod, claims, private_key, sign, write_jwks

KEY = ("fleet-1", "gs-0")


def headers(token: str | None) -> list[tuple[bytes, bytes]]:
    found = [(b"host", b"localhost"), (b"x-token-broker-request", b"true")]
    if token is not None:
        found.append((b"authorization", f"Bearer {token}".encode()))
    return found


async def per_check(guard: RequestGuard, request: list[tuple[bytes, bytes]], n: int) -> float:
    """CPU µs per guard.check, over n checks."""
    started = time.process_time()
    for _ in range(n):
        await guard.check(request, KEY)
    return (time.process_time() - started) / n * 1e6


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        jwks = Path(directory) / "jwks.json"
        write_jwks(jwks, r1=private_key("rsa"), e1=private_key("ec"))
        plain = RequestGuard(Settings(require_request_header=True))
        identity = RequestGuard(
            Settings(
                require_request_header=True,
                kubernetes_audience=AUDIENCE,
                kubernetes_issuer=ISSUER,
                kubernetes_jwks_file=jwks,
            )
        )
        body = claims(Pod(name="gs-0"))
        cases = {
            "no identity (reference)": (plain, headers(None)),
            "RS256 ServiceAccount token": (identity, headers(sign(body, private_key("rsa"), "r1"))),
            "ES256 ServiceAccount token": (identity, headers(sign(body, private_key("ec"), "e1"))),
        }
        rounds: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(args.rounds):  # interleaved, so a slow spell slows every case alike
            for name, (guard, request) in cases.items():
                rounds[name].append(await per_check(guard, request, args.requests))
    reference = rounds["no identity (reference)"]
    print(f"{'case':<28} {'CPU µs/check':>13} {'over reference':>15}")
    for name, values in rounds.items():
        extra = statistics.median(v - r for v, r in zip(values, reference, strict=True))
        print(f"{name:<28} {statistics.median(values):>13.1f} {extra:>+14.1f}")
    print(f"medians of {args.rounds} rounds of {args.requests} checks")


if __name__ == "__main__":
    asyncio.run(main())
