"""Publish stage: the read-only copy analysts query, and the views' presentation (tables)."""
