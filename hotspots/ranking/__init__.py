"""The harm-spot ranking: the one query model every door uses (``query``), offence selections (``presets``), the
resolved query plan every executor takes (``plan``: period, offence keys with weights, area cells, study domain,
resolved once), the ranking itself (``harmspots``: one scan of the plan, weigh by harm, aggregate to H3 cells,
rank, measure concentration) and the forecast model it can rank by (``forecast``: expected harm next period).
Imports only ``geodata`` from this project."""
