"""Statistics on cells and the offences behind them: Getis-Ord Gi* with FDR (``gistar``), emerging hot spots
(``emerging``), spikes against a trailing baseline (``spikes``), the rolling-origin backtest (``backtest``), the
month / 14-day slicing they share (``timeslices``), and ``for_query``, which runs each of them for a
``HotspotQuery``. Imports ``hotspots.ranking`` and ``geodata``; never ``hotspots.patrol``."""
