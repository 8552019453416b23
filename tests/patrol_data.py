"""Shared test data for the patrol-planning tests (tasking, key dates, patrols, evaluation).

The Leicestershire store (data.police.uk 2019-12..2022-10, ~294k rows, ~7 s to ingest) is built once per test
session into pytest's session temp directory and copied per test module, so each module writes to its own copy.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely

from geodata.harm import load_open_default
from geodata.ingest import StudyArea, parse_files
from geodata.store import Store

LEICS_CRIME = Path("/work/shared/data/crime/leicestershire_street_2019-12_to_2022-10.csv.gz")
LEICS_WARDS = Path("/work/shared/data/boundaries/leicestershire_wards2013.geojson")
LEICS = "leics"


def _build_leics(path: Path) -> None:
    store = Store(path)
    try:
        store.save_weights(load_open_default())
        store.ingest(LEICS, parse_files([(str(LEICS_CRIME), None)]), description="test: Leicestershire 2019-22")
        wards = gpd.read_file(LEICS_WARDS)
        districts = wards.dissolve(by="LAD_CODE", as_index=False, aggfunc="first")[["LAD_CODE", "LAD_NAME", "geometry"]]
        store.load_areas("districts", districts, name_field="LAD_NAME", id_field="LAD_CODE", district_field="LAD_NAME")
    finally:
        store.close()


def leics_store(tmp_path_factory: pytest.TempPathFactory, name: str) -> Store:
    """A private copy of the session's Leicestershire store (built on first use)."""
    if not LEICS_CRIME.exists():
        pytest.skip(f"{LEICS_CRIME} not available")
    template = tmp_path_factory.getbasetemp() / "leics_template.duckdb"
    if not template.exists():
        tmp = template.with_suffix(".building")
        if tmp.exists():
            tmp.unlink()
        _build_leics(tmp)
        tmp.rename(template)
    copy = tmp_path_factory.mktemp(name) / "harmspot.duckdb"
    shutil.copyfile(template, copy)
    return Store(copy)


# ------------------------------------------------------------------------------------------ synthetic data
CENTRE = (52.6369, -1.1398)  # Leicester


def two_districts(store: Store, lon0: float = -1.20, lat0: float = 52.60, width: float = 0.12,
                  height: float = 0.08) -> None:
    """Two rectangular 'districts' side by side (West, East)."""
    west = shapely.box(lon0, lat0, lon0 + width / 2, lat0 + height)
    east = shapely.box(lon0 + width / 2, lat0, lon0 + width, lat0 + height)
    frame = gpd.GeoDataFrame({"code": ["W01", "E01"], "name": ["West", "East"]}, geometry=[west, east], crs=4326)
    store.load_areas("districts", frame, name_field="name", id_field="code", district_field="name")


def extract_csv(rows: pd.DataFrame) -> bytes:
    """A force-extract CSV (record_id, occurred, longitude, latitude, category, location)."""
    return rows[["record_id", "occurred", "longitude", "latitude", "category", "location"]].to_csv(index=False).encode()


def ingest_rows(store: Store, dataset: str, rows: pd.DataFrame) -> None:
    parsed = parse_files([(f"{dataset}.csv", extract_csv(rows))], StudyArea())
    assert len(parsed.rejects) == 0, parsed.rejects.head()
    store.ingest(dataset, parsed)


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)
