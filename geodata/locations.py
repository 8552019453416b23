"""data.police.uk location texts: street names, and the generic snap points that are not streets.

data.police.uk moves every record to the nearest of a fixed set of anonymous map points and gives it that
point's text, "On or near <name>". Most points are street centroids ("On or near High Street"); some are
points of interest named only by their kind ("On or near Supermarket", "On or near Police Station"). A cell
whose records sit at such a point says little about a street, and crimes *recorded at* a police station
(handed in property, custody assaults, reports made at the front desk) are mapped to the station's point:
tasking patrols there is pointless.

:data:`GENERIC_POINTS` is the list of generic names seen in real data.police.uk street files (Leicestershire
2019-12..2022-10 and Essex 2024-01..04, ../shared/data; every one of them appears at many different coordinates,
which is what makes it generic): docs/hotspots.md#location-artefacts repeats it. A name not in the list counts as
a street. :func:`clean_location_sql` strips the "On or near " prefix in SQL; the comparison with the list is
case-insensitive on the cleaned text.
:func:`clean_location` does the same to texts already read (the ranking scan's groups).
"""
from __future__ import annotations

import re

POLICE_STATION = "Police Station"

# every name below was found in the shared data.police.uk files at 3 or more distinct map points (most at 10-425)
GENERIC_POINTS: tuple[str, ...] = (
    POLICE_STATION,
    "Parking Area",
    "Supermarket",
    "Sports/Recreation Area",
    "Petrol Station",
    "Shopping Area",
    "Park/Open Space",
    "Nightclub",
    "Hospital",
    "Bus/Coach Station",
    "Further/Higher Educational Building",
    "Conference/Exhibition Centre",
    "Theatre/Concert Hall",
    "Pedestrian Subway",
    "Airport/Airfield",
    "Motorway Service Area",
    "Ferry Terminal",
    "Prison",
)
NO_LOCATION = "No Location"  # records data.police.uk could not place (no coordinates either)


def clean_location_sql(column: str = "o.location") -> str:
    """SQL expression: the location text without its 'On or near ' prefix, trimmed ('' when missing)."""
    return f"trim(regexp_replace(coalesce({column}, ''), '^(On or near|on or near)\\s*', ''))"


_ON_OR_NEAR = re.compile(r"^(On or near|on or near)[\t\n\f\r ]*")  # clean_location_sql's pattern (RE2's \s)


def clean_location(text: str | None) -> str:
    """:func:`clean_location_sql` in Python, for texts already read (the prefix removed, spaces trimmed)."""
    return _ON_OR_NEAR.sub("", text or "", count=1).strip(" ")


def sql_list(names: tuple[str, ...]) -> str:
    """A SQL list literal of lower-cased names (they hold no quotes; checked)."""
    assert all("'" not in n for n in names)
    return "(" + ", ".join(f"'{n.lower()}'" for n in names) + ")"


__all__ = ["GENERIC_POINTS", "NO_LOCATION", "POLICE_STATION", "clean_location", "clean_location_sql", "sql_list"]
