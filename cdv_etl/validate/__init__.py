"""Validate stage: parse the staging table into the canonical record (``parse``: text → typed
values, the raw text kept), then apply the raw schema and the canonical Pandera models of
``schemas/canonical.py``, where each rule is stated once (``rules``, on Polars): every failure
of every row is collected, and ``outputs`` turns them into the quarantine."""
