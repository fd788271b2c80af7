-- What was rejected, and why: a list to send back to the partner.

CREATE OR REPLACE VIEW quarantine_all_failures AS
SELECT
    q.file_id, f.partner, f.file_name, r.source_row, r.sheet, q.rule, q.column_name AS "column",
    q.value, q.message
FROM quarantine_failures AS q
JOIN quarantine_rows AS r USING (file_id, row_key)
JOIN files AS f USING (file_id)
ORDER BY q.file_id, q.row_key, q.rule_order;
COMMENT ON VIEW quarantine_all_failures IS 'Chaque manquement de chaque ligne en quarantaine (une ligne peut enfreindre plusieurs règles).';

CREATE OR REPLACE VIEW quarantine AS
WITH first_failure AS (
    SELECT * FROM quarantine_failures
    QUALIFY row_number() OVER (PARTITION BY file_id, row_key ORDER BY rule_order, column_name) = 1
),
all_rules AS (
    SELECT file_id, row_key, string_agg(DISTINCT rule, ', ' ORDER BY rule) AS rules,
           count(*) AS failures
    FROM quarantine_failures GROUP BY ALL
)
SELECT
    r.file_id, f.partner, f.file_name, r.source_row, r.sheet,
    ff.rule, ff.column_name AS "column", ff.value, ff.message,
    a.rules AS all_rules, a.failures,
    r.raw_record,
    cur.file_id IS NOT NULL AS is_current
FROM quarantine_rows AS r
JOIN files AS f USING (file_id)
JOIN first_failure AS ff USING (file_id, row_key)
JOIN all_rules AS a USING (file_id, row_key)
LEFT JOIN current_files AS cur USING (file_id)
ORDER BY r.file_id, r.row_key;
COMMENT ON VIEW quarantine IS 'Une ligne par ligne rejetée : son fichier, la ligne telle qu''on la voit dans le fichier, la première règle enfreinte (toutes dans all_rules), la colonne, la valeur, un message et la ligne brute.';

CREATE OR REPLACE VIEW v_quarantine_summary AS
SELECT f.partner, q.rule, count(*) AS rows_quarantined, q.is_current
FROM quarantine AS q JOIN files AS f USING (file_id)
GROUP BY ALL ORDER BY f.partner, rows_quarantined DESC, q.rule;
COMMENT ON VIEW v_quarantine_summary IS 'Lignes en quarantaine par partenaire et par règle (la première enfreinte), pour les exports courants et antérieurs.';
