-- How each file's own total (a footer row, as BDT's TOTAL) reconciles with what was read.
-- The loader compares the control total with the sum of every amount read, loaded and
-- quarantined alike (control_total_diff_eur = control total − amounts read). Split into parts:
--   engaged_amount_eur      loaded rows that count as engaged;
--   not_engaged_amount_eur  loaded rows that do not (a withdrawn grant, a cancelled loan);
--   quarantined_amount_eur  the amounts read in the quarantined rows (a row without a readable
--                           amount gives none): amounts read − loaded amounts;
--   control_total_diff_eur  what the control total counts that no row gave (0 when it matches).
-- The four parts add up to control_total_eur exactly, to the cent. One row per loaded file
-- that has a control total; the report and the nightly artifacts read it from here.
CREATE OR REPLACE VIEW v_control_totals AS
SELECT
    file_id, partner, file_name, extraction_date, is_current,
    rows_read, rows_loaded, rows_quarantined,
    control_total_eur,
    engaged_amount_eur,
    (loaded_amount_eur - engaged_amount_eur)::DECIMAL(18, 2) AS not_engaged_amount_eur,
    (control_total_eur - control_total_diff_eur - loaded_amount_eur)::DECIMAL(18, 2) AS quarantined_amount_eur,
    control_total_diff_eur,
    control_total_ok
FROM file_loads
WHERE status = 'loaded' AND control_total_eur IS NOT NULL
ORDER BY is_current DESC, partner, extraction_date DESC, file_id DESC;

COMMENT ON VIEW v_control_totals IS 'Pour chaque fichier chargé qui porte son propre total (ligne de pied) : comment le total de contrôle se répartit entre montants engagés, chargés mais non engagés, en quarantaine, et l''écart qu''aucune ligne n''explique ; les parts font exactement le total de contrôle.';
