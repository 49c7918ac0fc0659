"""Benchmarks of scimd against its ceiling (the same HTTP server doing no work) and a peer
(scim2-server); `python -m bench --help`, results in bench/results/, docs/benchmarks.md."""
