-- The warehouse as migrations 001-006 leave it, for a DuckLake catalog, where they cannot run.
-- DuckLake has no PRIMARY KEY, UNIQUE, CHECK, sequences or indexes: the keys are kept by the
-- loader, file and reference-load ids from id_counters (migration 009). Same tables, same
-- columns in the same order and types as a DuckDB-file warehouse at version 006.
-- migrate() runs this file, then 002_reference_data.sql itself (its INSERTs are portable), and
-- records versions 1-6 with the checksums of their own files; tests/test_lake_sql.py compares
-- the result with a DuckDB file's.

CREATE TABLE axes (
    axis        TINYINT NOT NULL,
    label       VARCHAR NOT NULL,
    short_label VARCHAR NOT NULL
);

CREATE TABLE partners (
    partner VARCHAR NOT NULL,
    name    VARCHAR NOT NULL
);

CREATE TABLE instruments (
    instrument VARCHAR NOT NULL,
    label      VARCHAR NOT NULL
);

CREATE TABLE envelopes (
    partner    VARCHAR NOT NULL,
    envelope   VARCHAR NOT NULL,
    label      VARCHAR NOT NULL,
    amount_eur DECIMAL(18, 2) NOT NULL
);

CREATE TABLE envelope_instruments (
    partner    VARCHAR NOT NULL,
    envelope   VARCHAR NOT NULL,
    instrument VARCHAR NOT NULL
);

CREATE TABLE reference_loads (
    reference_load_id INTEGER NOT NULL,
    file_name   VARCHAR NOT NULL,
    sha256      VARCHAR NOT NULL,
    loaded_at   TIMESTAMP NOT NULL DEFAULT current_timestamp,
    communes    INTEGER NOT NULL,
    conventions INTEGER NOT NULL
);

CREATE TABLE conventions (
    convention_id VARCHAR NOT NULL,
    label         VARCHAR NOT NULL
);

CREATE TABLE communes (
    insee_code      VARCHAR NOT NULL,
    name            VARCHAR NOT NULL,
    convention_id   VARCHAR NOT NULL,
    department      VARCHAR NOT NULL,
    region_code     VARCHAR,
    region          VARCHAR,
    epci_siren      VARCHAR,
    population      INTEGER,
    reference_load_id INTEGER,
    longitude       DOUBLE,
    latitude        DOUBLE
);

CREATE TABLE files (
    file_id          INTEGER NOT NULL,
    partner          VARCHAR,
    file_name        VARCHAR NOT NULL,
    sha256           VARCHAR NOT NULL,
    size_bytes       BIGINT NOT NULL,
    extraction_date  DATE,
    loaded_at        TIMESTAMP NOT NULL DEFAULT current_timestamp,
    status           VARCHAR NOT NULL,
    reason           VARCHAR,
    message          VARCHAR,
    rows_read        INTEGER NOT NULL DEFAULT 0,
    rows_loaded      INTEGER NOT NULL DEFAULT 0,
    rows_quarantined INTEGER NOT NULL DEFAULT 0,
    loaded_amount_eur  DECIMAL(18, 2),
    engaged_amount_eur DECIMAL(18, 2),
    control_total_eur  DECIMAL(18, 2),
    control_total_diff_eur DECIMAL(18, 2),
    duplicate_of     INTEGER,
    forced_reloads   INTEGER NOT NULL DEFAULT 0,
    stat_device      UBIGINT,
    stat_inode       UBIGINT,
    stat_mtime_ns    BIGINT,
    stat_ctime_ns    BIGINT
);

CREATE TABLE engagement_rows (
    file_id         INTEGER NOT NULL,
    row_key         BIGINT NOT NULL,
    source_row      INTEGER NOT NULL,
    sheet           VARCHAR,
    partner         VARCHAR NOT NULL,
    operation_id    VARCHAR NOT NULL,
    insee_code      VARCHAR NOT NULL,
    commune_label   VARCHAR,
    axis            TINYINT NOT NULL,
    category        VARCHAR,
    year            SMALLINT NOT NULL,
    engagement_date DATE,
    instrument      VARCHAR,
    instrument_label VARCHAR,
    scheme          VARCHAR,
    project_label   VARCHAR,
    amount_eur      DECIMAL(18, 2) NOT NULL,
    status          VARCHAR NOT NULL,
    counts_as_engaged BOOLEAN NOT NULL
);

CREATE TABLE quarantine_rows (
    file_id    INTEGER NOT NULL,
    row_key    BIGINT NOT NULL,
    source_row INTEGER NOT NULL,
    sheet      VARCHAR,
    raw_record JSON
);

CREATE TABLE quarantine_failures (
    file_id     INTEGER NOT NULL,
    row_key     BIGINT NOT NULL,
    rule        VARCHAR NOT NULL,
    rule_order  TINYINT NOT NULL,
    column_name VARCHAR,
    value       VARCHAR,
    message     VARCHAR NOT NULL
);

CREATE TABLE financing_totals (
    file_id           INTEGER NOT NULL,
    partner           VARCHAR NOT NULL,
    axis              TINYINT NOT NULL,
    year              SMALLINT NOT NULL,
    insee_code        VARCHAR NOT NULL,
    instrument        VARCHAR,
    counts_as_engaged BOOLEAN NOT NULL,
    amount_eur        DECIMAL(18, 2) NOT NULL,
    lines             BIGINT NOT NULL
);
