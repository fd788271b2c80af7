-- Staging layer: the current export of each partner, and the file ledger.

-- Exports are full snapshots: a partner's current export is its latest loaded file by
-- extraction date (then load time), whatever the order the files arrived in. A held export
-- (status 'held': it would have withdrawn too much of the current one) is never current
-- until it is accepted (cdv-etl accept FILE_ID makes it 'loaded').
CREATE OR REPLACE VIEW current_files AS
WITH ranked AS (
    SELECT
        file_id, partner, extraction_date,
        row_number() OVER (
            PARTITION BY partner
            ORDER BY extraction_date DESC NULLS LAST, loaded_at DESC, file_id DESC
        ) AS rank_in_partner
    FROM files
    WHERE status = 'loaded'
)
SELECT file_id, partner, extraction_date FROM ranked WHERE rank_in_partner = 1;

COMMENT ON VIEW current_files IS 'Pour chaque partenaire, son export courant : le dernier fichier chargé, par date d''extraction.';

CREATE OR REPLACE VIEW file_loads AS
SELECT
    f.file_id, f.partner, f.file_name, f.status, f.reason, f.message,
    f.extraction_date, f.loaded_at, f.sha256, f.size_bytes,
    f.rows_read, f.rows_loaded, f.rows_quarantined,
    f.loaded_amount_eur, f.engaged_amount_eur,
    f.control_total_eur, f.control_total_diff_eur,
    CASE WHEN f.control_total_eur IS NULL THEN NULL
         ELSE f.control_total_diff_eur = 0 END AS control_total_ok,
    f.duplicate_of, f.forced_reloads,
    cur.file_id IS NOT NULL AS is_current,
    f.compared_file_id, f.withdrawn_operations, f.withdrawn_absent, f.withdrawn_quarantined,
    f.withdrawn_eur, f.accepted_at
FROM files AS f
LEFT JOIN current_files AS cur USING (file_id);

COMMENT ON VIEW file_loads IS 'Une ligne par fichier reçu : chargé, doublon (mêmes octets qu''un fichier antérieur), retenu (il aurait retiré trop de l''export courant : à accepter) ou rejeté en entier.';
