"""What the running service holds: the store handle, the default weights table and the result cache of the
store's states (no other global state)."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd

from geodata.harm import WeightsTable, load_open_default, load_weights_file
from app.cache import ResultCache
from geodata.ingest import StudyArea, parse_files
from geodata.settings import SAMPLE_DIR, Settings
from geodata.store import Store

log = logging.getLogger("harmspot")
SAMPLE_DATASET = "essex-sample"
SAMPLE_FILE = SAMPLE_DIR / "essex_street_2024-01_to_2024-04.csv.gz"
SAMPLE_DISTRICTS = SAMPLE_DIR / "boundaries" / "essex_districts.geojson"
SAMPLE_WARDS = SAMPLE_DIR / "boundaries" / "essex_wards.geojson"


@dataclass
class ServiceState:
    settings: Settings
    store: Store
    default_weights: WeightsTable
    cache: ResultCache = field(default_factory=lambda: ResultCache(0))  # results per store version (app.cache)


def load_weights(settings: Settings, store: Store) -> WeightsTable:
    """Save the open default table, and the configured licensed table if any; return the default to use."""
    open_table = load_open_default()
    store.save_weights(open_table)
    if settings.harm_weights:
        table = load_weights_file(Path(settings.harm_weights), settings.harm_weights_name)
        store.save_weights(table)
        return table
    return open_table


def load_sample(store: Store) -> None:
    """Ingest the bundled Essex sample and its boundary layers (districts, wards) into an empty store."""
    area = StudyArea.from_geojson(SAMPLE_DISTRICTS, "Essex Police area (districts)")
    parsed = parse_files([(str(SAMPLE_FILE), None)], area)
    report = store.ingest(SAMPLE_DATASET, parsed, area, description="data.police.uk Essex 2024-01..04 (OGL v3.0)")
    log.info("sample loaded: %s", report.to_dict())
    load_sample_boundaries(store)
    load_sample_poi(store, area)


def load_sample_poi(store: Store, area: StudyArea | None = None) -> None:
    """The bundled sample/poi layers (OSM pubs, railway stations, FHRS pubs/restaurants) for RTM, with their
    ODbL/OGL attribution; features further than 400 m outside the sample's study area are left out."""
    from geodata.layer_store import load_sample_layers

    area = area or StudyArea.from_geojson(SAMPLE_DISTRICTS, "Essex Police area (districts)")
    layers = load_sample_layers(store, area, study_area=area.name)
    log.info("sample POI layers loaded: %s", {s["name"]: s["features"] for s in layers})


def load_sample_boundaries(store: Store) -> None:
    districts = gpd.read_file(SAMPLE_DISTRICTS)
    store.load_areas("districts", districts, name_field="LAD_NAME", id_field="LAD_CODE", district_field="LAD_NAME")
    wards = gpd.read_file(SAMPLE_WARDS)
    store.load_areas("wards", wards, name_field="WD13NM", id_field="WD13CD", district_field="LAD_NAME")


def open_state(settings: Settings) -> ServiceState:
    store = settings.open_store()
    weights = load_weights(settings, store)
    if settings.load_sample and store.datasets().empty:
        load_sample(store)
    elif settings.load_sample and store.has_dataset(SAMPLE_DATASET):
        from geodata.layer_store import layer_names

        if not layer_names(store):  # a store made before POI layers existed: add them once
            load_sample_poi(store)
    from hotspots.patrol.gps import purge_expired_pings

    purge_expired_pings(store, settings.gps_ping_retention_days)  # officer pings never outlive the retention
    return ServiceState(settings=settings, store=store, default_weights=weights,
                        cache=ResultCache(settings.cache_mb * 1024 * 1024, settings.computing_slots()))
