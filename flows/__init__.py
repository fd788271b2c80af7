"""Prefect flows: thin wrappers that drive the core pipeline (``cdv_etl``) as tasks.

- ``nightly``: the inbox → reference first, then each new export as its own task, files
  moved to archive/ or rejected/, publish, artifacts.
- ``ingest-export``: one file, started by hand (a late export, a re-run after a fix).
- ``reference-refresh``: a new ANCT list of ACV communes.
"""

from cdv_etl import offline

offline.apply()
