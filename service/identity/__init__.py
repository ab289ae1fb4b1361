"""Caller identity: Kubernetes ServiceAccount tokens verified against the cluster's keys."""
