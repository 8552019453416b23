"""Other executors of the same ``HotspotQuery``: ``dask_backend`` runs it on Dask over partitioned Parquet and
shares ranking and result assembly with the embedded DuckDB executor in ``hotspots.ranking.harmspots``.
Imports ``hotspots.ranking`` and ``geodata``."""
