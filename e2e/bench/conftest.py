"""Benchmarks are run by `python -m e2e.bench`, never collected by pytest (testpaths include e2e)."""

collect_ignore_glob = ["*"]
