"""gamelift-token-broker: caches Amazon GameLift compute auth tokens for local game servers."""

__version__ = "0.1.0"
