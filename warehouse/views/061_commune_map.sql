-- The report's map: each ACV commune where the reference places it, with what it received.
-- territory names the overseas department of an INSEE code 97xxx (ANCT's cartography places
-- those communes in insets off the Atlantic coast; the map draws one inset per territory).
CREATE OR REPLACE VIEW v_commune_map AS
SELECT
    f.insee_code, f.commune, f.convention_id, f.department, f.region,
    CASE left(f.insee_code, 3)
        WHEN '971' THEN 'Guadeloupe'
        WHEN '972' THEN 'Martinique'
        WHEN '973' THEN 'Guyane'
        WHEN '974' THEN 'La Réunion'
        WHEN '976' THEN 'Mayotte'
        ELSE CASE WHEN left(f.insee_code, 2) = '97' THEN 'Outre-mer' ELSE 'France métropolitaine' END
    END AS territory,
    c.population, c.longitude, c.latitude,
    f.engaged_eur, f.operations::BIGINT AS operations,
    round(f.engaged_eur / nullif(c.population, 0), 2)::DECIMAL(18, 2) AS eur_per_inhabitant
FROM v_financing_by_commune AS f
JOIN communes AS c USING (insee_code)
ORDER BY f.engaged_eur DESC, f.insee_code;

COMMENT ON VIEW v_commune_map IS 'Chaque commune ACV avec sa position dans le référentiel (longitude, latitude), son territoire, sa population, le montant engagé et les euros par habitant : la carte du rapport.';
