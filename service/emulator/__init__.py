"""A local GameLift Anywhere: the control plane over AWS JSON 1.1 and the server SDK's websocket.

Imports nothing of the broker but the API's names and the listening sockets: the broker reaches
it only over HTTP.
"""

from service.emulator.app import Emulator

__all__ = ["Emulator"]
