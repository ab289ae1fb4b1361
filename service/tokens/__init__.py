"""Tokens: the Token type, the TokenSource interface, and the cache in front of any source.

Imports neither botocore nor FastAPI: whatever mints or serves tokens depends on this.
"""
