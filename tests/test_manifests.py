"""The Kubernetes layouts as kustomize renders them: nothing that gates a container's start
waits on a later container or on AWS, and the game server asks for the compute its broker
registers. (.ci/lint-deploy validates the same renders against the API schemas.)"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from service import names

ROOT = Path(__file__).resolve().parent.parent
LAYOUTS = sorted(p.parent for p in (ROOT / "deploy" / "kubernetes").rglob("kustomization.yaml"))
KUBECTL = shutil.which("kubectl")
# What each of the broker's probe endpoints waits on. /healthz answers as soon as the broker
# listens; /readyz waits for AWS: credentials, the registration and every prefetched token.
WAITS_ON = {"/healthz": set(), "/readyz": {"aws", "registration", "prefetched tokens"}}
POD_NAME = "<pod name>"

Doc = dict[str, Any]


def render(layout: Path) -> list[Doc]:
    if KUBECTL is None:
        pytest.skip("kubectl (with kustomize) is not installed; .ci/lint-deploy installs it")
    done = subprocess.run(
        [KUBECTL, "kustomize", str(layout)], capture_output=True, text=True, check=True
    )
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def pods(docs: list[Doc]) -> list[tuple[str, Doc]]:
    return [
        (f"{d['kind']}/{d['metadata']['name']}", d["spec"]["template"]["spec"])
        for d in docs
        if "template" in d.get("spec", {})
    ]


def start_order(pod: Doc) -> list[Doc]:
    """Containers in the order the kubelet starts them: init containers one by one (a native
    sidecar, restartPolicy Always, must pass its startupProbe before the next starts), then
    the main containers."""
    return [*pod.get("initContainers", []), *pod.get("containers", [])]


def is_broker(container: Doc) -> bool:
    return "gamelift-token-broker" in container.get("image", "")


def environment(container: Doc, docs: list[Doc]) -> dict[str, str]:
    """The container's variables as the kubelet resolves them (downward API values named)."""
    maps = {d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] == "ConfigMap"}
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(maps[source["configMapRef"]["name"]])
    for item in container.get("env", []):
        source = item.get("valueFrom", {})
        if "value" in item:
            env[item["name"]] = expand(item["value"], env)
        elif "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            env[item["name"]] = maps[ref["name"]][ref["key"]]
        elif "fieldRef" in source:
            path = source["fieldRef"]["fieldPath"]
            env[item["name"]] = {"metadata.name": POD_NAME, "status.podIP": "<pod IP>"}.get(
                path, f"<{path}>"
            )
        else:
            env[item["name"]] = f"<{item['name']}>"
    return env


def expand(value: str, env: dict[str, str]) -> str:
    # $(VAR) refers only to variables defined earlier in the same container, as in Kubernetes.
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m[1], m[0]), value)


def probe_path(probe: Doc) -> str:
    return str(probe.get("httpGet", {}).get("path", ""))


def waits_on(container: Doc, probe: Doc, env: dict[str, str]) -> set[str]:
    """What a probe of the broker waits on, and who provides it: registration is the broker's
    own when it registers the keys it prefetches; otherwise someone else must."""
    waits = set(WAITS_ON.get(probe_path(probe), {"unknown"}))
    registered = {env["TOKEN_BROKER_REGISTER"]} if env.get("TOKEN_BROKER_REGISTER") else set()
    prefetched = {k for k in env.get("TOKEN_BROKER_PREFETCH", "").split(",") if k}
    if "prefetched tokens" in waits and prefetched - registered:
        waits.add("a compute registered by another container")
    return waits


@pytest.mark.parametrize("layout", LAYOUTS, ids=[p.name for p in LAYOUTS])
def test_no_gating_probe_waits_on_a_later_container_or_on_aws(layout: Path) -> None:
    docs = render(layout)
    for where, pod in pods(docs):
        for container in start_order(pod):
            if not is_broker(container):
                continue
            env = environment(container, docs)
            # startupProbe gates the containers after a native sidecar and, like liveness,
            # restarts the broker when it fails: neither may wait on AWS or on anyone else.
            for kind in ("startupProbe", "livenessProbe"):
                if kind in container:
                    waits = waits_on(container, container[kind], env)
                    assert not waits, f"{where} {container['name']} {kind} waits on {waits}"
            assert probe_path(container.get("readinessProbe", {})) == "/readyz"


def sidecar() -> tuple[list[Doc], Doc, Doc]:
    docs = render(ROOT / "deploy" / "kubernetes" / "sidecar")
    ((_, pod),) = pods(docs)
    (broker,) = [c for c in start_order(pod) if is_broker(c)]
    (game,) = [c for c in start_order(pod) if not is_broker(c)]
    return docs, broker, game


def test_the_sidecar_registers_its_pod_and_the_game_server_asks_for_it() -> None:
    docs, broker, game = sidecar()
    env = environment(broker, docs)
    fleet, _, compute = env["TOKEN_BROKER_REGISTER"].partition("/")
    assert compute == POD_NAME and names.is_valid_fleet_id(fleet)
    assert env["TOKEN_BROKER_REGISTER_IP_ADDRESS"] == "<pod IP>"
    location = env["TOKEN_BROKER_REGISTER_LOCATION"]
    assert location.startswith("custom-") and names.LOCATION_RE.fullmatch(location)
    assert "TOKEN_BROKER_PREFETCH" not in env, "registration prefetches the key already"

    game_env = environment(game, docs)
    argv = [expand(arg, game_env) for arg in game.get("command", []) + game.get("args", [])]
    assert argv[:2] == ["gamelift-token-broker", "exec"], argv
    asked = argv[argv.index("--fleet-id") + 1], argv[argv.index("--compute-name") + 1]
    assert asked == (fleet, compute), "the game server asks for another compute"
    assert "--" in argv and argv[-1] != "--", "no game server command after --"


def test_no_container_sets_a_gamelift_sdk_variable() -> None:
    # The SDKs take a set GAMELIFT_SDK_* (C++ and C# even an empty one) over anything else:
    # only `exec` sets them, all five at once.
    docs, broker, game = sidecar()
    for container in (broker, game):
        assert not [n for n in environment(container, docs) if n.startswith("GAMELIFT_SDK_")]


def test_the_model_sees_the_old_deadlock() -> None:
    # The layout before: the broker's startupProbe on /readyz, prefetching a compute that the
    # game server was to register. The check above must call that out.
    container = {"startupProbe": {"httpGet": {"path": "/readyz"}}}
    env = {"TOKEN_BROKER_PREFETCH": f"fleet-1/{POD_NAME}"}
    assert "a compute registered by another container" in waits_on(
        container, container["startupProbe"], env
    )
    assert "aws" in waits_on(container, container["startupProbe"], {})
