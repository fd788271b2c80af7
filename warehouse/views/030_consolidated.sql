-- Consolidated views over the current state. engaged_eur sums only the lines that count
-- as engaged (a withdrawn Anah grant is loaded and kept, but not counted).
-- They read financing_totals (each file's lines summed by partner, axis, year, commune,
-- instrument and whether they count), not the lines: a few thousand rows whatever the size
-- of the exports. `operations` is the number of lines, as count(*) over financing was: a
-- BIGINT (sum(lines) alone is a HUGEINT, which Arrow and Parquet carry as decimal(38, 0)).

CREATE OR REPLACE VIEW financing_current_totals AS
SELECT t.partner, t.axis, t.year, t.insee_code, t.instrument, t.counts_as_engaged,
       t.amount_eur, t.lines, c.convention_id, c.department, c.region
FROM financing_totals AS t
JOIN current_files AS cur USING (file_id)
LEFT JOIN communes AS c USING (insee_code);

CREATE OR REPLACE VIEW v_financing_by_axis AS
WITH engaged AS (
    SELECT axis, sum(amount_eur) AS engaged_eur, sum(lines) AS operations
    FROM financing_current_totals WHERE counts_as_engaged GROUP BY axis
),
total AS (SELECT sum(engaged_eur) AS all_eur FROM engaged)
SELECT
    a.axis, a.label AS axis_label, a.short_label,
    coalesce(e.engaged_eur, 0)::DECIMAL(18, 2) AS engaged_eur,
    coalesce(e.operations, 0)::BIGINT AS operations,
    round(100 * coalesce(e.engaged_eur, 0) / nullif(t.all_eur, 0), 2)::DECIMAL(6, 2) AS share_pct
FROM axes AS a
LEFT JOIN engaged AS e USING (axis)
CROSS JOIN total AS t
ORDER BY a.axis;
COMMENT ON VIEW v_financing_by_axis IS 'Montants engagés des exports courants par axe, avec la part de chaque axe dans le total.';

CREATE OR REPLACE VIEW v_financing_by_partner AS
SELECT
    p.partner, p.name AS partner_name,
    coalesce(sum(f.amount_eur) FILTER (WHERE f.counts_as_engaged), 0)::DECIMAL(18, 2) AS engaged_eur,
    coalesce(sum(f.lines) FILTER (WHERE f.counts_as_engaged), 0)::BIGINT AS operations,
    cur.file_id, cur.extraction_date
FROM partners AS p
LEFT JOIN financing_current_totals AS f USING (partner)
LEFT JOIN current_files AS cur USING (partner)
GROUP BY ALL
ORDER BY engaged_eur DESC, p.partner;
COMMENT ON VIEW v_financing_by_partner IS 'Montants engagés par partenaire, d''après son export courant.';

CREATE OR REPLACE VIEW v_financing_by_year AS
SELECT year, sum(amount_eur)::DECIMAL(18, 2) AS engaged_eur, sum(lines)::BIGINT AS operations
FROM financing_current_totals WHERE counts_as_engaged
GROUP BY year ORDER BY year;
COMMENT ON VIEW v_financing_by_year IS 'Montants engagés des exports courants par année d''engagement.';

CREATE OR REPLACE VIEW v_financing_axis_partner_year AS
SELECT axis, partner, year, sum(amount_eur)::DECIMAL(18, 2) AS engaged_eur, sum(lines)::BIGINT AS operations
FROM financing_current_totals WHERE counts_as_engaged
GROUP BY axis, partner, year ORDER BY axis, partner, year;
COMMENT ON VIEW v_financing_axis_partner_year IS 'Montants engagés par axe, partenaire et année : le cube derrière les autres vues.';

CREATE OR REPLACE VIEW v_financing_by_convention AS
WITH conv AS (
    SELECT convention_id, string_agg(name, ', ' ORDER BY name) AS communes,
           any_value(department) AS department, any_value(region) AS region
    FROM communes GROUP BY convention_id
)
SELECT
    c.convention_id, c.communes, c.department, c.region,
    coalesce(sum(f.amount_eur) FILTER (WHERE f.counts_as_engaged), 0)::DECIMAL(18, 2) AS engaged_eur,
    coalesce(sum(f.lines) FILTER (WHERE f.counts_as_engaged), 0)::BIGINT AS operations,
    count(DISTINCT f.partner) FILTER (WHERE f.counts_as_engaged) AS partners
FROM conv AS c
LEFT JOIN financing_current_totals AS f USING (convention_id)
GROUP BY ALL
ORDER BY engaged_eur DESC, c.convention_id;
COMMENT ON VIEW v_financing_by_convention IS 'Montants engagés par convention ACV (une convention peut couvrir plusieurs communes), y compris les conventions qui n''ont rien reçu.';

CREATE OR REPLACE VIEW v_financing_by_commune AS
SELECT
    c.insee_code, c.name AS commune, c.convention_id, c.department, c.region,
    coalesce(sum(f.amount_eur) FILTER (WHERE f.counts_as_engaged), 0)::DECIMAL(18, 2) AS engaged_eur,
    coalesce(sum(f.lines) FILTER (WHERE f.counts_as_engaged), 0)::BIGINT AS operations,
    count(DISTINCT f.partner) FILTER (WHERE f.counts_as_engaged) AS partners
FROM communes AS c
LEFT JOIN financing_current_totals AS f USING (insee_code)
GROUP BY ALL
ORDER BY engaged_eur DESC, c.insee_code;
COMMENT ON VIEW v_financing_by_commune IS 'Montants engagés par commune ACV, y compris les communes qui n''ont rien reçu.';

CREATE OR REPLACE VIEW v_envelope_consumption AS
WITH line_envelope AS (
    SELECT
        f.partner,
        coalesce(ei.envelope, e_all.envelope) AS envelope,
        f.amount_eur
    FROM financing_current_totals AS f
    LEFT JOIN envelope_instruments AS ei
        ON ei.partner = f.partner AND ei.instrument = f.instrument
    LEFT JOIN (
        SELECT partner, any_value(envelope) AS envelope FROM envelopes AS e
        WHERE NOT EXISTS (SELECT 1 FROM envelope_instruments AS x
                          WHERE x.partner = e.partner AND x.envelope = e.envelope)
        GROUP BY partner
    ) AS e_all ON e_all.partner = f.partner
    WHERE f.counts_as_engaged
),
engaged AS (
    SELECT partner, envelope, sum(amount_eur) AS engaged_eur
    FROM line_envelope GROUP BY ALL
),
slots AS (
    SELECT partner, envelope, label AS envelope_label, amount_eur AS envelope_eur FROM envelopes
    UNION ALL
    SELECT p.partner, NULL, NULL, NULL FROM partners AS p
    WHERE NOT EXISTS (SELECT 1 FROM envelopes AS e WHERE e.partner = p.partner)
)
SELECT
    s.partner, p.name AS partner_name, s.envelope, s.envelope_label, s.envelope_eur,
    coalesce(e.engaged_eur, 0)::DECIMAL(18, 2) AS engaged_eur,
    round(100 * coalesce(e.engaged_eur, 0) / s.envelope_eur, 2)::DECIMAL(8, 2) AS used_pct
FROM slots AS s
JOIN partners AS p USING (partner)
LEFT JOIN engaged AS e
    ON e.partner = s.partner AND e.envelope IS NOT DISTINCT FROM s.envelope
ORDER BY s.partner, s.envelope;
COMMENT ON VIEW v_envelope_consumption IS 'Consommation de chaque enveloppe nationale par les exports courants ; un partenaire sans enveloppe figure avec une enveloppe NULL et son total engagé.';
