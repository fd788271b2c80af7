"""Prefect flows: thin wrappers that run the core (``cdv_etl``) with its steps as tasks.

- ``nightly``: the core's inbox run (``cdv_etl.inbox``: reference first, then each new export,
  files moved to archive/ or rejected/, publish, report), each step a task, plus artifacts.
- ``ingest-export``: one file, started by hand (a late export, a re-run after a fix).
- ``reference-refresh``: a new ANCT list of ACV communes.
"""

from cdv_etl import offline

offline.apply()
