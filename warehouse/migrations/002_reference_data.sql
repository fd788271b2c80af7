-- 002 reference data: the programme's axes, partners, instruments and envelopes.

INSERT INTO axes VALUES
    (1, 'De la réhabilitation à la restructuration : vers une offre attractive de l''habitat en centre-ville', 'Habitat'),
    (2, 'Favoriser un développement économique et commercial équilibré', 'Économie et commerce'),
    (3, 'Développer l''accessibilité, la mobilité et les connexions', 'Mobilité'),
    (4, 'Mettre en valeur les formes urbaines, l''espace public et le patrimoine', 'Espace public et patrimoine'),
    (5, 'Fournir l''accès aux équipements et services publics', 'Équipements et services publics');

INSERT INTO partners VALUES
    ('bdt', 'Banque des Territoires (Caisse des Dépôts)'),
    ('action_logement', 'Action Logement'),
    ('anah', 'Anah (Agence nationale de l''habitat)'),
    ('etat', 'État (DSIL, FNADT, FISAC, DETR, Fonds friches)'),
    ('epf', 'Établissements publics fonciers');

INSERT INTO instruments VALUES
    ('grant', 'Subvention'),
    ('loan', 'Prêt'),
    ('equity', 'Fonds propres'),
    ('engineering', 'Ingénierie'),
    ('land', 'Portage foncier');

INSERT INTO envelopes VALUES
    ('bdt', 'equity', 'Fonds propres (ingénierie comprise)', 1000000000.00),
    ('bdt', 'loans', 'Prêts', 700000000.00),
    ('action_logement', 'total', 'Enveloppe nationale', 1500000000.00),
    ('anah', 'total', 'Enveloppe nationale', 1200000000.00);

INSERT INTO envelope_instruments VALUES
    ('bdt', 'equity', 'equity'),
    ('bdt', 'equity', 'engineering'),
    ('bdt', 'loans', 'loan');
