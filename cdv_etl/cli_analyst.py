"""Analyst commands (exports, data dictionary, report, changes between exports).

``register(app)`` adds them to the ``cdv-etl`` command line (see ``cdv_etl.cli``).
"""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the analyst commands to ``app``."""
