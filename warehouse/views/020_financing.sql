-- Marts: the engagement lines of every export (history) and of the current exports.

CREATE OR REPLACE VIEW financing_history AS
SELECT
    r.partner, r.operation_id, r.insee_code,
    c.name AS commune, c.convention_id, c.department, c.region,
    r.axis, r.year, r.engagement_date, r.instrument, r.amount_eur, r.status,
    r.counts_as_engaged, r.file_id, r.source_row, r.sheet,
    f.file_name, f.extraction_date, f.loaded_at,
    r.category, r.instrument_label, r.scheme, r.project_label, r.commune_label,
    cur.file_id IS NOT NULL AS is_current
FROM engagement_rows AS r
JOIN files AS f USING (file_id)
LEFT JOIN communes AS c USING (insee_code)
LEFT JOIN current_files AS cur USING (file_id);

COMMENT ON VIEW financing_history IS 'Toutes les lignes d''engagement de tous les exports jamais chargés, avec leur export : l''historique derrière financing.';

CREATE OR REPLACE VIEW financing AS
SELECT
    partner, operation_id, insee_code, commune, convention_id, department, region,
    axis, year, engagement_date, instrument, amount_eur, status, counts_as_engaged,
    file_id, source_row, sheet,
    category, instrument_label, scheme, project_label
FROM financing_history
WHERE is_current;

COMMENT ON VIEW financing IS 'L''état courant : une ligne par ligne d''engagement du dernier export de chaque partenaire.';
