"""The HTTP layer: the app, its routes, the raw fast path, the protocol bound and the guard."""
