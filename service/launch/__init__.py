"""The launcher: `gamelift-token-broker exec`, which starts a game server with its server
parameters. Standard library and `names` only, so it starts fast in any image with Python."""
