-- Consolidated views over the current state. engaged_eur sums only the lines that count
-- as engaged (a withdrawn Anah grant is loaded and kept, but not counted).
-- They read financing_totals (each file's lines summed by partner, axis, year, commune,
-- instrument and whether they count), not the lines: a few thousand rows whatever the size
-- of the exports. `operations` is the number of lines, as count(*) over financing was: a
-- BIGINT (sum(lines) alone is a HUGEINT, which Arrow and Parquet carry as decimal(38, 0)).
--
-- One total everywhere: each view sums to the same engaged total, the sum of
-- financing_current_totals' engaged lines. Where a view lists a dimension (axes, partners,
-- communes, conventions, envelopes), it is FULL JOINed with what the lines carry, so a line
-- whose commune, convention, partner or envelope the dimension lacks still has its row (with
-- NULL labels) rather than vanishing from one view while counted by another.

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
    coalesce(a.axis, e.axis) AS axis, a.label AS axis_label, a.short_label,
    coalesce(e.engaged_eur, 0)::DECIMAL(18, 2) AS engaged_eur,
    coalesce(e.operations, 0)::BIGINT AS operations,
    round(100 * coalesce(e.engaged_eur, 0) / nullif(t.all_eur, 0), 2)::DECIMAL(6, 2) AS share_pct
FROM axes AS a
FULL JOIN engaged AS e ON e.axis = a.axis
CROSS JOIN total AS t
ORDER BY 1;
COMMENT ON VIEW v_financing_by_axis IS 'Montants engagés des exports courants par axe, avec la part de chaque axe dans le total.';

CREATE OR REPLACE VIEW v_financing_by_partner AS
WITH engaged AS (
    SELECT partner, sum(amount_eur) AS engaged_eur, sum(lines) AS operations
    FROM financing_current_totals WHERE counts_as_engaged GROUP BY partner
),
listed AS (
    SELECT coalesce(p.partner, e.partner) AS partner, p.name AS partner_name, e.engaged_eur, e.operations
    FROM partners AS p
    FULL JOIN engaged AS e ON e.partner = p.partner
)
SELECT
    l.partner, l.partner_name,
    coalesce(l.engaged_eur, 0)::DECIMAL(18, 2) AS engaged_eur,
    coalesce(l.operations, 0)::BIGINT AS operations,
    cur.file_id, cur.extraction_date
FROM listed AS l
LEFT JOIN current_files AS cur USING (partner)
ORDER BY engaged_eur DESC, l.partner;
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

-- A line whose commune is not in the reference has no convention: it counts in the row whose
-- convention_id is NULL (there only when such lines exist).
CREATE OR REPLACE VIEW v_financing_by_convention AS
WITH conv AS (
    SELECT convention_id, string_agg(name, ', ' ORDER BY name) AS communes,
           any_value(department) AS department, any_value(region) AS region
    FROM communes GROUP BY convention_id
),
engaged AS (
    SELECT convention_id,
           sum(amount_eur) FILTER (WHERE counts_as_engaged) AS engaged_eur,
           sum(lines) FILTER (WHERE counts_as_engaged) AS operations,
           count(DISTINCT partner) FILTER (WHERE counts_as_engaged) AS partners
    FROM financing_current_totals GROUP BY convention_id
)
SELECT
    coalesce(c.convention_id, e.convention_id) AS convention_id, c.communes, c.department, c.region,
    coalesce(e.engaged_eur, 0)::DECIMAL(18, 2) AS engaged_eur,
    coalesce(e.operations, 0)::BIGINT AS operations,
    coalesce(e.partners, 0) AS partners
FROM conv AS c
FULL JOIN engaged AS e ON e.convention_id = c.convention_id
ORDER BY engaged_eur DESC, convention_id NULLS LAST;
COMMENT ON VIEW v_financing_by_convention IS 'Montants engagés par convention ACV (une convention peut couvrir plusieurs communes), y compris les conventions qui n''ont rien reçu ; les lignes d''une commune absente du référentiel sur une ligne sans convention.';

-- A line whose commune is not in the reference keeps its row, with no name, convention or place.
CREATE OR REPLACE VIEW v_financing_by_commune AS
WITH engaged AS (
    SELECT insee_code,
           sum(amount_eur) FILTER (WHERE counts_as_engaged) AS engaged_eur,
           sum(lines) FILTER (WHERE counts_as_engaged) AS operations,
           count(DISTINCT partner) FILTER (WHERE counts_as_engaged) AS partners
    FROM financing_current_totals GROUP BY insee_code
)
SELECT
    coalesce(c.insee_code, e.insee_code) AS insee_code, c.name AS commune, c.convention_id, c.department, c.region,
    coalesce(e.engaged_eur, 0)::DECIMAL(18, 2) AS engaged_eur,
    coalesce(e.operations, 0)::BIGINT AS operations,
    coalesce(e.partners, 0) AS partners
FROM communes AS c
FULL JOIN engaged AS e ON e.insee_code = c.insee_code
ORDER BY engaged_eur DESC, insee_code;
COMMENT ON VIEW v_financing_by_commune IS 'Montants engagés par commune ACV, y compris les communes qui n''ont rien reçu (et une ligne sans nom par code absent du référentiel, s''il en reste).';

-- Each engaged line draws on one envelope of its partner: the one its instrument is tied to,
-- else the partner's envelope that takes every instrument. A partner with no envelope, and a
-- line that no envelope of its partner takes, count in a row whose envelope is NULL.
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
),
listed AS (
    SELECT
        coalesce(s.partner, e.partner) AS partner, coalesce(s.envelope, e.envelope) AS envelope,
        s.envelope_label, s.envelope_eur, e.engaged_eur
    FROM slots AS s
    FULL JOIN engaged AS e
        ON e.partner = s.partner AND e.envelope IS NOT DISTINCT FROM s.envelope
)
SELECT
    l.partner, p.name AS partner_name, l.envelope, l.envelope_label, l.envelope_eur,
    coalesce(l.engaged_eur, 0)::DECIMAL(18, 2) AS engaged_eur,
    round(100 * coalesce(l.engaged_eur, 0) / l.envelope_eur, 2)::DECIMAL(8, 2) AS used_pct
FROM listed AS l
LEFT JOIN partners AS p USING (partner)
ORDER BY l.partner, l.envelope;
COMMENT ON VIEW v_envelope_consumption IS 'Consommation de chaque enveloppe nationale par les exports courants ; un partenaire sans enveloppe, ou des lignes qu''aucune enveloppe de leur partenaire ne prend, figurent avec une enveloppe NULL et leur total engagé.';
