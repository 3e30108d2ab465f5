"""Benchmarks of the operator and the engine, each figure next to a baseline measured in the same run.

Run `python -m e2e.bench --help`. Not part of `make test`: benchmarks report, they do not fail.
"""
