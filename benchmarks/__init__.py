"""Benchmarks of the token service against a naive baseline: `python -m benchmarks [--quick]`.

Everything runs on loopback against a fake Direct Line served over HTTPS with a certificate made at
run time; see `benchmarks/run.py` for what is measured and `benchmarks/RESULTS.md` for the results.
"""
