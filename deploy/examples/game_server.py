"""A stand-in game server: what a real one does with the server SDK 5, in one small file.

It takes InitSDK's five values from the GAMELIFT_SDK_* environment (as `gamelift-token-broker
exec` or the GameLift Agent sets them), connects to the SDK websocket the way the Go SDK does,
calls ProcessReady, activates every game session it is given, and ends its process when
GameLift tells it to or on SIGTERM. Run it against the emulator to try the whole start-up
loop without an AWS account:

    gamelift-token-broker exec --fleet-id F --compute-name C -- python game_server.py

It needs only Python and the `websockets` package (installed with the broker).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import uuid
from urllib.parse import urlencode, urlsplit

from websockets.asyncio.client import ClientConnection, connect

VARIABLES = ("WEBSOCKET_URL", "AUTH_TOKEN", "FLEET_ID", "HOST_ID", "PROCESS_ID")


def say(message: str) -> None:
    print(f"game-server: {message}", flush=True)


def connect_url(sdk: dict[str, str]) -> str:
    # As the Go SDK 5.6 does: any query on the URL dropped, the parameters sorted and encoded.
    parts = urlsplit(sdk["WEBSOCKET_URL"])
    params = {
        "Authorization": sdk["AUTH_TOKEN"],
        "ComputeId": sdk["HOST_ID"],
        "FleetId": sdk["FLEET_ID"],
        "IdempotencyToken": str(uuid.uuid4()),
        "pID": sdk["PROCESS_ID"],
        "sdkLanguage": "Python",
        "sdkVersion": "5.6.0",
    }
    return f"{parts.scheme}://{parts.netloc}{parts.path}?{urlencode(sorted(params.items()))}"


class Sdk:
    def __init__(self, socket: ClientConnection) -> None:
        self.socket = socket
        self.waiting: dict[str, asyncio.Future[dict[str, object]]] = {}

    async def call(self, action: str, wait: float, **fields: object) -> dict[str, object]:
        request_id = str(uuid.uuid4())
        reply = asyncio.get_running_loop().create_future()
        self.waiting[request_id] = reply
        await self.socket.send(json.dumps({"Action": action, "RequestId": request_id, **fields}))
        return await asyncio.wait_for(reply, wait)


async def serve(sdk_values: dict[str, str], port: int) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    async with connect(connect_url(sdk_values), compression=None, ping_interval=None) as socket:
        sdk = Sdk(socket)
        pushes: asyncio.Queue[dict[str, object]] = asyncio.Queue()

        async def read() -> None:
            async for text in socket:
                frame = json.loads(text)
                waiter = sdk.waiting.pop(str(frame.get("RequestId") or ""), None)
                if waiter is not None:
                    waiter.set_result(frame)
                elif frame.get("StatusCode") == 200:
                    pushes.put_nowait(frame)
            stop.set()

        reader = asyncio.create_task(read())
        reply = await sdk.call(
            "ActivateServerProcess",
            6.0,
            SdkVersion="5.6.0",
            SdkLanguage="Python",
            SdkToolName="",
            SdkToolVersion="",
            Port=port,
            LogPaths=[],
        )
        if reply.get("StatusCode") != 200:
            say(f"ProcessReady failed: {reply.get('ErrorMessage')}")
            return 1
        await sdk.call("HeartbeatServerProcess", 20.0, HealthStatus=True)
        say(f"process ready (process {sdk_values['PROCESS_ID']}, port {port})")
        stopping = asyncio.create_task(stop.wait())
        while not stop.is_set():
            next_push = asyncio.create_task(pushes.get())
            done, _ = await asyncio.wait({next_push, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if next_push not in done:
                next_push.cancel()
                break
            push = next_push.result()
            if push.get("Action") == "CreateGameSession":
                session = str(push["GameSessionId"])
                await sdk.call("ActivateGameSession", 20.0, GameSessionId=session)
                say(f"game session active: {session}")
            elif push.get("Action") == "TerminateProcess":
                say("GameLift asked this process to end")
                break
        await sdk.call("TerminateServerProcess", 20.0)  # ProcessEnding
        say("process ending")
        reader.cancel()
    return 0


def main() -> int:
    values = {name: os.environ.get(f"GAMELIFT_SDK_{name}", "") for name in VARIABLES}
    missing = [f"GAMELIFT_SDK_{name}" for name, value in values.items() if not value]
    if missing:
        say(f"missing {', '.join(missing)}: start me with gamelift-token-broker exec")
        return 2
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 7777
    return asyncio.run(serve(values, port))


if __name__ == "__main__":
    sys.exit(main())
