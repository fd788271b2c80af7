"""Benchmarks of the ingest: a generator of large partner exports and a measuring harness.

Run ``python -m bench.harness --quick`` (see ``bench/README.md``). Nothing here is imported
by the pipeline or by the test suite.
"""
