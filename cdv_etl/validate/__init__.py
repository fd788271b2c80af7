"""Validate stage: parse the staging table into the canonical record (``parse``), then apply
the raw and canonical Pandera schemas (``rules``): every failure of every row is collected."""
