"""Peers measured beside Queue Manager by `python -m bench.peers` (`make bench-peers`); benchmark-only."""
