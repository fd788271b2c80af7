"""cdv-etl: Action Cœur de Ville partner exports → validated, exact DuckDB warehouse.

The data's way, one subpackage a stage: ``read`` → ``validate`` → ``load`` → ``publish``;
``pipeline`` strings them together, ``cli`` and ``flows/`` drive the pipeline.
"""

__version__ = "0.1.0"
