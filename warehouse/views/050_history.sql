-- History: what changed between two exports of a partner, and the figures as known on a day.
-- Exports are full snapshots: comparing two of them operation by operation tells what the
-- partner added, withdrew or revised in between, and which operations only moved out of or
-- into quarantine. Built on files, financing_history and the quarantine.

-- changes_between(from_export, to_export): the changes from one loaded export of a partner
-- (a file_id) to another. A NULL end means "the neighbour": changes_between(NULL, 7) compares
-- file 7 with the partner's export just before it, changes_between(3, NULL) file 3 with the
-- one just after it, changes_between(NULL, NULL) every pair of consecutive exports (v_changes).
-- Exports are ordered as current_files ranks them: extraction date, then load time, file_id.
-- An operation is its operation_id within the export; in each export it is loaded (a line of
-- financing_history), quarantined (its rows of quarantine_rows: the id the parse read, stored
-- at load time; a repeated id is one operation, its amounts summed) or absent. Its change:
--   added              absent from the earlier export, loaded in the later one;
--   withdrawn          loaded in the earlier export, absent from the later one;
--   revised            loaded in both, and a column that counts in the figures differs:
--                      amount_eur, axis, insee_code, year, instrument, status or counts_as_engaged
--                      (listed in changed_columns). A grant cancelled in place (statut = annulé)
--                      is revised, its engaged_delta_eur minus its amount;
--   newly_valid        quarantined in the earlier export, loaded in the later one;
--   newly_quarantined  loaded in the earlier export, quarantined in the later one.
-- An operation that is never loaded (quarantined in both, or quarantined in one and absent
-- from the other) changes no figure and is not listed: the quarantine lists it. Nor is a
-- rejected row without an operation id (nothing to match).
-- engaged_delta_eur is the change of the engaged figures (a quarantined row counts 0): the
-- changes sum to the difference between the two exports' engaged totals, to the cent.
CREATE OR REPLACE MACRO changes_between(from_export, to_export) AS TABLE
WITH exports AS (
    SELECT
        file_id, partner, file_name, extraction_date,
        lag(file_id) OVER by_partner AS previous_file_id,
        row_number() OVER by_partner = count(*) OVER (PARTITION BY partner) AS is_latest
    FROM files
    WHERE status = 'loaded'
    WINDOW by_partner AS (PARTITION BY partner ORDER BY extraction_date NULLS FIRST, loaded_at, file_id)
),
pairs AS (
    SELECT
        a.partner,
        a.file_id AS from_file_id, a.file_name AS from_file_name, a.extraction_date AS from_extraction_date,
        b.file_id AS to_file_id, b.file_name AS to_file_name, b.extraction_date AS to_extraction_date,
        b.is_latest AS to_is_current
    FROM exports AS a
    JOIN exports AS b ON b.partner = a.partner
    WHERE (from_export IS NULL OR a.file_id = from_export)
      AND (to_export IS NULL OR b.file_id = to_export)
      AND ((from_export IS NOT NULL AND to_export IS NOT NULL) OR b.previous_file_id = a.file_id)
),
compared_files AS (
    SELECT from_file_id AS file_id FROM pairs UNION SELECT to_file_id FROM pairs
),
rejected_rules AS (
    SELECT r.file_id, r.operation_id, string_agg(DISTINCT q.rule, ', ' ORDER BY q.rule) AS rules
    FROM quarantine_records AS r
    JOIN quarantine_failures AS q USING (file_id, row_key)
    WHERE r.operation_id IS NOT NULL AND r.file_id IN (SELECT file_id FROM compared_files)
    GROUP BY ALL
),
-- Each join below is on a whole key, (file_id, row_key) or (file_id, operation_id), and the rules
-- join the operations once these are summed: whatever order the optimizer picks, no join is on
-- file_id alone (on a lake, without a DuckDB file's statistics, it once paired every quarantined
-- row of an export with every other one).
quarantined_operations AS (
    SELECT
        r.file_id, r.operation_id, sum(r.amount_eur)::DECIMAL(18, 2) AS amount_eur,
        min(s.source_row) AS source_row
    FROM quarantine_records AS r
    JOIN quarantine_rows AS s USING (file_id, row_key)
    WHERE r.operation_id IS NOT NULL AND r.file_id IN (SELECT file_id FROM compared_files)
    GROUP BY r.file_id, r.operation_id
),
quarantined AS (
    SELECT q.file_id, q.operation_id, q.amount_eur, q.source_row, qr.rules
    FROM quarantined_operations AS q
    JOIN rejected_rules AS qr USING (file_id, operation_id)
),
operations AS (
    SELECT
        file_id, operation_id, 'loaded' AS state, amount_eur, counts_as_engaged, axis, insee_code, commune,
        year, instrument, status, source_row, NULL::VARCHAR AS rules
    FROM financing_history
    WHERE file_id IN (SELECT file_id FROM compared_files)
    UNION ALL
    SELECT
        file_id, operation_id, 'quarantined', amount_eur, false, NULL, NULL, NULL,
        NULL, NULL, NULL, source_row, rules
    FROM quarantined  -- never an id loaded too: every row of a repeated id is quarantined
),
earlier AS (
    SELECT p.from_file_id, p.to_file_id, o.*
    FROM pairs AS p
    JOIN operations AS o ON o.file_id = p.from_file_id
),
later AS (
    SELECT p.from_file_id, p.to_file_id, o.*
    FROM pairs AS p
    JOIN operations AS o ON o.file_id = p.to_file_id
),
compared AS (
    SELECT
        coalesce(o.from_file_id, n.from_file_id) AS from_file_id,
        coalesce(o.to_file_id, n.to_file_id) AS to_file_id,
        coalesce(o.operation_id, n.operation_id) AS operation_id,
        nullif(concat_ws(', ',
            CASE WHEN o.amount_eur IS DISTINCT FROM n.amount_eur THEN 'amount_eur' END,
            CASE WHEN o.axis IS DISTINCT FROM n.axis THEN 'axis' END,
            CASE WHEN o.insee_code IS DISTINCT FROM n.insee_code THEN 'insee_code' END,
            CASE WHEN o.year IS DISTINCT FROM n.year THEN 'year' END,
            CASE WHEN o.instrument IS DISTINCT FROM n.instrument THEN 'instrument' END,
            CASE WHEN o.status IS DISTINCT FROM n.status THEN 'status' END,
            CASE WHEN o.counts_as_engaged IS DISTINCT FROM n.counts_as_engaged THEN 'counts_as_engaged' END
        ), '') AS differences,
        CASE WHEN o.state IS NULL AND n.state = 'loaded' THEN 'added'
             WHEN o.state = 'loaded' AND n.state IS NULL THEN 'withdrawn'
             WHEN o.state = 'loaded' AND n.state = 'loaded' THEN 'revised'
             WHEN o.state = 'quarantined' AND n.state = 'loaded' THEN 'newly_valid'
             WHEN o.state = 'loaded' AND n.state = 'quarantined' THEN 'newly_quarantined' END AS change,
        o.amount_eur AS old_amount_eur, n.amount_eur AS new_amount_eur,
        (n.amount_eur - o.amount_eur)::DECIMAL(18, 2) AS amount_delta_eur,
        (CASE WHEN n.counts_as_engaged THEN n.amount_eur ELSE 0 END
         - CASE WHEN o.counts_as_engaged THEN o.amount_eur ELSE 0 END)::DECIMAL(18, 2) AS engaged_delta_eur,
        coalesce(n.rules, o.rules) AS quarantine_rules,
        o.axis AS old_axis, n.axis AS new_axis,
        o.insee_code AS old_insee_code, n.insee_code AS new_insee_code,
        o.commune AS old_commune, n.commune AS new_commune,
        o.year AS old_year, n.year AS new_year,
        o.instrument AS old_instrument, n.instrument AS new_instrument,
        o.status AS old_status, n.status AS new_status,
        o.source_row AS old_source_row, n.source_row AS new_source_row
    FROM earlier AS o
    FULL JOIN later AS n
        ON n.from_file_id = o.from_file_id AND n.to_file_id = o.to_file_id AND n.operation_id = o.operation_id
)
SELECT
    p.partner, p.from_file_id, p.from_file_name, p.from_extraction_date,
    p.to_file_id, p.to_file_name, p.to_extraction_date, p.to_is_current,
    c.change, c.operation_id,
    CASE WHEN c.change = 'revised' THEN c.differences END AS changed_columns,
    c.old_amount_eur, c.new_amount_eur, c.amount_delta_eur, c.engaged_delta_eur, c.quarantine_rules,
    c.old_axis, c.new_axis, c.old_insee_code, c.new_insee_code, c.old_commune, c.new_commune,
    c.old_year, c.new_year, c.old_instrument, c.new_instrument, c.old_status, c.new_status,
    c.old_source_row, c.new_source_row
FROM compared AS c
JOIN pairs AS p USING (from_file_id, to_file_id)
WHERE c.change IS NOT NULL AND (c.change <> 'revised' OR c.differences IS NOT NULL)
ORDER BY p.partner, p.to_extraction_date, p.to_file_id, p.from_file_id, c.change, c.operation_id;

-- A table macro's doc goes to schema_docs (apply_views empties it first, then fills it with the
-- column docs): DuckLake has no COMMENT ON MACRO.
INSERT INTO schema_docs (kind, name, comment) VALUES ('macro', 'changes_between', 'changes_between(from_export, to_export), deux file_id : d''un export chargé d''un partenaire à un autre, les opérations ajoutées, retirées et révisées, et celles qui sont seulement entrées en quarantaine ou en sont sorties, avec les anciennes et nouvelles valeurs et leurs euros (une borne NULL désigne l''export voisin). Mêmes colonnes que v_changes.');

CREATE OR REPLACE VIEW v_changes AS
SELECT * FROM changes_between(NULL, NULL);

COMMENT ON VIEW v_changes IS 'Pour chaque partenaire et chaque paire d''exports chargés consécutifs (par date d''extraction) : les opérations ajoutées, retirées, révisées (montant, axe, commune, année, type de financement ou statut modifié), devenues valides (en quarantaine dans l''ancien export, chargées dans le nouveau) ou mises en quarantaine (l''inverse), avec les anciennes et nouvelles valeurs et leurs euros.';

-- financing_as_of(as_of_date [, hindsight := false]): the engagement lines as they were known
-- on a day: for each partner, its latest export extracted on or before that day and loaded by
-- the end of it (loaded_at is the loading machine's local time). Same columns as financing,
-- plus file_name and extraction_date. The load-time condition makes the answer reproducible:
-- it is what the views showed that evening. hindsight := true drops it, for exports loaded
-- later (a backfill of old exports, a late file): the figures as the exports stood that day,
-- with everything loaded since. A file re-ingested with --force counts from its reload.
CREATE OR REPLACE MACRO financing_as_of(as_of_date, hindsight := false) AS TABLE
WITH known AS (
    SELECT file_id, partner, extraction_date, loaded_at
    FROM files
    WHERE status = 'loaded'
      AND extraction_date <= CAST(as_of_date AS DATE)
      AND (hindsight OR loaded_at < CAST(as_of_date AS DATE) + INTERVAL 1 DAY)
),
chosen AS (
    SELECT file_id
    FROM known
    QUALIFY row_number() OVER (
        PARTITION BY partner ORDER BY extraction_date DESC, loaded_at DESC, file_id DESC) = 1
)
SELECT
    partner, operation_id, insee_code, commune, convention_id, department, region,
    axis, year, engagement_date, instrument, amount_eur, status, counts_as_engaged,
    file_id, source_row, sheet,
    category, instrument_label, scheme, project_label,
    file_name, extraction_date
FROM financing_history
WHERE file_id IN (SELECT file_id FROM chosen);

INSERT INTO schema_docs (kind, name, comment) VALUES ('macro', 'financing_as_of', 'financing_as_of(as_of_date [, hindsight := false]) : les lignes d''engagement telles que connues ce jour-là (pour chaque partenaire, son dernier export extrait ce jour-là ou avant et chargé avant la fin du jour ; hindsight := true compte aussi les exports chargés plus tard). Colonnes de financing, plus file_name et extraction_date.');

-- engaged_as_of(as_of_date [, hindsight := false]): the consolidated figures as known on a
-- day, per partner, axis and year (the cube of v_financing_axis_partner_year, back then).
CREATE OR REPLACE MACRO engaged_as_of(as_of_date, hindsight := false) AS TABLE
SELECT
    partner, axis, year,
    sum(amount_eur)::DECIMAL(18, 2) AS engaged_eur,
    count(*) AS operations,
    file_id, extraction_date
FROM financing_as_of(as_of_date, hindsight := hindsight)
WHERE counts_as_engaged
GROUP BY partner, axis, year, file_id, extraction_date
ORDER BY partner, axis, year;

INSERT INTO schema_docs (kind, name, comment) VALUES ('macro', 'engaged_as_of', 'engaged_as_of(as_of_date [, hindsight := false]) : montants engagés par partenaire, axe et année tels que connus ce jour-là, avec l''export d''où viennent les chiffres de chaque partenaire.');
