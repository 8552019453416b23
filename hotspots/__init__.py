"""Hotspot engines: plain libraries that take a store handle (or data frames) and a typed query and return typed
results; nothing here knows about HTTP, and nothing here imports ``app``.

Rooms, and what each may import (besides ``geodata`` and the numeric libraries):

- ``hotspots.ranking``   — the query model (``HotspotQuery``), offence presets and the harm-spot ranking
  (filter, weigh, aggregate to H3, rank, concentration). Imports nothing else from ``hotspots``.
- ``hotspots.stats``     — statistics on the ranked cells and the offences behind them: Getis-Ord Gi*, emerging
  hot spots, spikes, the rolling-origin backtest, time slicing. May import ``hotspots.ranking``.
- ``hotspots.patrol``    — patrol planning: tasking packs, key dates, the patrol log and its evaluation. May
  import ``hotspots.ranking`` and ``hotspots.stats``.
- ``hotspots.executors`` — other executors of the same query (Dask over partitioned Parquet). May import
  ``hotspots.ranking``.
- ``hotspots.publish``   — what may leave the force: the public-disclosure policy. May import
  ``hotspots.ranking``.
"""
