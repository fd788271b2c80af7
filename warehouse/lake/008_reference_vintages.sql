-- 008 reference vintages, on a DuckLake: ../migrations/008_reference_vintages.sql without what a
-- lake lacks: the CHECK on insee_code's length and the primary keys of reference_communes and
-- reference_moves (the reference loader refuses a malformed or repeated code before it inserts,
-- and each reference load writes its own moves once), and forced's default written as text (below).
-- Everything else is the same statements.
ALTER TABLE reference_loads ADD COLUMN vintage DATE;
-- DuckLake takes `false` for an expression ("cannot add a column with a non-literal default
-- value"), and the text 'false' for a literal: it is cast to the same BOOLEAN false.
ALTER TABLE reference_loads ADD COLUMN forced BOOLEAN DEFAULT 'false';
ALTER TABLE reference_loads ADD COLUMN communes_added INTEGER;
ALTER TABLE reference_loads ADD COLUMN communes_removed INTEGER;
ALTER TABLE reference_loads ADD COLUMN rows_to_quarantine BIGINT;
ALTER TABLE reference_loads ADD COLUMN eur_to_quarantine DECIMAL(18, 2);
ALTER TABLE reference_loads ADD COLUMN rows_from_quarantine BIGINT;
ALTER TABLE reference_loads ADD COLUMN eur_from_quarantine DECIMAL(18, 2);

CREATE TABLE reference_communes (
    reference_load_id INTEGER NOT NULL,
    insee_code      VARCHAR NOT NULL,
    name            VARCHAR NOT NULL,
    convention_id   VARCHAR NOT NULL,
    department      VARCHAR NOT NULL,
    region_code     VARCHAR,
    region          VARCHAR,
    epci_siren      VARCHAR,
    population      INTEGER,
    longitude       DOUBLE,
    latitude        DOUBLE
);
INSERT INTO reference_communes
SELECT reference_load_id, insee_code, name, convention_id, department, region_code, region,
       epci_siren, population, longitude, latitude
FROM communes WHERE reference_load_id IS NOT NULL;

-- What each reference change moved, per file.
CREATE TABLE reference_moves (
    reference_load_id    INTEGER NOT NULL,
    file_id              INTEGER NOT NULL,
    rows_to_quarantine   BIGINT NOT NULL,
    eur_to_quarantine    DECIMAL(18, 2) NOT NULL,
    rows_from_quarantine BIGINT NOT NULL,
    eur_from_quarantine  DECIMAL(18, 2) NOT NULL
);

-- The typed canonical values of each quarantined row (the columns of engagement_rows, NULL
-- where the partner's text did not parse), beside quarantine_rows' raw cells: a row that
-- only broke commune_not_acv moves back to engagement_rows when its commune joins the list,
-- and a quarantined row whose commune leaves it gains that failure. insee_raw is the INSEE
-- cell as the partner wrote it (the failure's value). Rows quarantined before this
-- migration have none: a forced reload of their file gives them theirs.
CREATE TABLE quarantine_records (
    file_id         INTEGER NOT NULL,
    row_key         BIGINT NOT NULL,
    operation_id    VARCHAR,
    insee_raw       VARCHAR,
    insee_code      VARCHAR,
    commune_label   VARCHAR,
    axis            INTEGER,
    category        VARCHAR,
    year            SMALLINT,
    engagement_date DATE,
    instrument      VARCHAR,
    instrument_label VARCHAR,
    scheme          VARCHAR,
    project_label   VARCHAR,
    amount_eur      DECIMAL(18, 2),
    status          VARCHAR,
    counts_as_engaged BOOLEAN
);
