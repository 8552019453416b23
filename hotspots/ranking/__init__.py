"""The harm-spot ranking: the one query model every door uses (``query``), offence selections (``presets``) and
the ranking itself (``harmspots``: filter offences, weigh them by harm, aggregate to H3 cells, rank, measure
concentration). Imports only ``geodata`` from this project."""
