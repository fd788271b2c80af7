"""Errors that a person reads: each says what went wrong and what to do next."""

from __future__ import annotations


class CdvError(Exception):
    """Base error; ``hint`` says what to do next."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\n  → {self.hint}" if self.hint else self.message


class SpecError(CdvError):
    """A partner spec is missing, invalid or ambiguous."""


class FileRejected(CdvError):
    """A whole file is refused: unreadable, undecodable, missing columns, empty, too large."""

    def __init__(self, reason: str, message: str, hint: str = "") -> None:
        super().__init__(message, hint)
        self.reason = reason


class WarehouseBusy(CdvError):
    """Another process holds the warehouse's write lock for longer than we may wait."""


class BeingLoaded(WarehouseBusy):
    """Another writer has claimed the same bytes and is loading them: nothing was changed."""


class ReconciliationError(CdvError):
    """rows_read != rows_loaded + rows_quarantined: the load is rolled back."""
