-- 001 core: reference data, file ledger, loaded rows and quarantine.
-- Tables are private (their names may change); analysts use the views of warehouse/views.

CREATE TABLE axes (
    axis        TINYINT PRIMARY KEY,
    label       VARCHAR NOT NULL,
    short_label VARCHAR NOT NULL
);

CREATE TABLE partners (
    partner VARCHAR PRIMARY KEY,
    name    VARCHAR NOT NULL
);

CREATE TABLE instruments (
    instrument VARCHAR PRIMARY KEY,
    label      VARCHAR NOT NULL
);

CREATE TABLE envelopes (
    partner    VARCHAR NOT NULL,
    envelope   VARCHAR NOT NULL,
    label      VARCHAR NOT NULL,
    amount_eur DECIMAL(18, 2) NOT NULL,
    PRIMARY KEY (partner, envelope)
);

-- Which instruments draw on which envelope; an envelope with no row here takes them all.
CREATE TABLE envelope_instruments (
    partner    VARCHAR NOT NULL,
    envelope   VARCHAR NOT NULL,
    instrument VARCHAR NOT NULL,
    PRIMARY KEY (partner, instrument)
);

CREATE SEQUENCE reference_load_seq START 1;
CREATE TABLE reference_loads (
    reference_load_id INTEGER PRIMARY KEY DEFAULT nextval('reference_load_seq'),
    file_name   VARCHAR NOT NULL,
    sha256      VARCHAR NOT NULL,
    loaded_at   TIMESTAMP NOT NULL DEFAULT current_timestamp,
    communes    INTEGER NOT NULL,
    conventions INTEGER NOT NULL
);

CREATE TABLE conventions (
    convention_id VARCHAR PRIMARY KEY,
    label         VARCHAR NOT NULL
);

CREATE TABLE communes (
    insee_code      VARCHAR PRIMARY KEY CHECK (length(insee_code) = 5),
    name            VARCHAR NOT NULL,
    convention_id   VARCHAR NOT NULL,
    department      VARCHAR NOT NULL,
    region_code     VARCHAR,
    region          VARCHAR,
    epci_siren      VARCHAR,
    population      INTEGER,
    reference_load_id INTEGER
);

CREATE SEQUENCE file_seq START 1;
-- The ledger: one row per file seen (loaded, duplicate or rejected).
CREATE TABLE files (
    file_id          INTEGER PRIMARY KEY DEFAULT nextval('file_seq'),
    partner          VARCHAR,
    file_name        VARCHAR NOT NULL,
    sha256           VARCHAR NOT NULL,
    size_bytes       BIGINT NOT NULL,
    extraction_date  DATE,
    loaded_at        TIMESTAMP NOT NULL DEFAULT current_timestamp,
    status           VARCHAR NOT NULL CHECK (status IN ('loaded', 'duplicate', 'rejected')),
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
    forced_reloads   INTEGER NOT NULL DEFAULT 0
);

-- Every row ever loaded, stamped with its file and the row a person sees in that file.
CREATE TABLE engagement_rows (
    file_id         INTEGER NOT NULL,
    row_key         BIGINT NOT NULL,   -- reading order within the file (unique across sheets)
    source_row      INTEGER NOT NULL,  -- the row a person sees: spreadsheet row, CSV line
    sheet           VARCHAR,           -- the workbook's sheet, NULL for text files
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
    counts_as_engaged BOOLEAN NOT NULL,
    PRIMARY KEY (file_id, row_key)
);

-- One row per rejected source row, with the whole record as the partner wrote it.
CREATE TABLE quarantine_rows (
    file_id    INTEGER NOT NULL,
    row_key    BIGINT NOT NULL,
    source_row INTEGER NOT NULL,
    sheet      VARCHAR,
    raw_record JSON,
    PRIMARY KEY (file_id, row_key)
);

-- Every failure of every rejected row (a row can break several rules).
CREATE TABLE quarantine_failures (
    file_id     INTEGER NOT NULL,
    row_key     BIGINT NOT NULL,
    rule        VARCHAR NOT NULL,
    rule_order  TINYINT NOT NULL,
    column_name VARCHAR,
    value       VARCHAR,
    message     VARCHAR NOT NULL
);
