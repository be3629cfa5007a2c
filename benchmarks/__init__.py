"""Benchmarks of the token service against a naive baseline and a Node peer:
`python -m benchmarks [--quick | --smoke]`.

Everything runs on loopback against a fake Direct Line served over HTTPS with a certificate made at
run time; see `benchmarks/run.py` for what is measured and `benchmarks/RESULTS.md` for the results.
"""
