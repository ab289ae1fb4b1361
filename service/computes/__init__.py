"""Computes: the per-compute websocket URL, and this host's own registration."""
