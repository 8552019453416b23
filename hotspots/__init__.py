"""Hotspot engines: harm spots on H3 cells, and (see the statistics modules) Gi*, emerging hotspots, spikes and
the backtest. Plain libraries: they take a store handle or data frames and return typed results."""
