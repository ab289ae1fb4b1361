"""Which tokens a verified pod may have: its own compute, in the fleets its rule names."""

from __future__ import annotations

from collections.abc import Mapping

from service import errors
from service.identity.verify import Identity
from service.names import Key

# (namespace, ServiceAccount or None for the whole namespace) -> fleets.
Rules = Mapping[tuple[str, str | None], frozenset[str]]


class FleetRules:
    """TOKEN_BROKER_KUBERNETES_FLEETS, parsed and checked by the settings.

    With no rules, a pod may ask for its own compute in any fleet the broker serves
    (TOKEN_BROKER_ALLOWED_FLEETS still applies). With rules, a pod that no rule names gets
    nothing; the rule for its ServiceAccount, if there is one, replaces its namespace's.
    """

    def __init__(self, rules: Rules) -> None:
        self._rules = dict(rules)

    def authorize(self, identity: Identity, key: Key) -> None:
        """Raise Forbidden unless `identity` may have `key`'s token."""
        fleet, compute = key
        if compute != identity.pod_name:
            # The default rule, and the one that matters most: another pod's compute token
            # would let this pod act as that game server.
            raise errors.Forbidden(
                "a pod may ask only for the compute named after itself", code="NotOwnCompute"
            )
        if not self._rules:
            return
        fleets = self._rules.get((identity.namespace, identity.service_account))
        if fleets is None:
            fleets = self._rules.get((identity.namespace, None))
        if fleets is None:
            raise errors.Forbidden(
                "no TOKEN_BROKER_KUBERNETES_FLEETS rule names this pod's namespace or"
                " ServiceAccount",
                code="IdentityNotAllowed",
            )
        if fleet not in fleets:
            raise errors.Forbidden(
                "fleet is not one that TOKEN_BROKER_KUBERNETES_FLEETS gives this pod",
                code="FleetNotAllowed",
            )
