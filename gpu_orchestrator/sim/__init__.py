"""Discrete-time simulation over the real policy (see `fleet`)."""
