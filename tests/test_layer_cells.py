"""geodata.areas.layer_cells: the (h3_10, feature_id) pairs of one stored area layer, or NotStored (404) - the one
look-up tasking, the patrol evaluation and spikes by area share."""
from __future__ import annotations

import geopandas as gpd
import h3
import numpy as np
import pytest
from shapely.geometry import box

from app.state import load_sample_boundaries
from geodata.areas import layer_cells
from geodata.store import NotStored

CHELMSFORD = box(0.46, 51.72, 0.49, 51.74)  # about 2 x 2 km: a few hundred res-10 cells


def _layer(store, name: str, ids: list[str], geoms) -> None:
    frame = gpd.GeoDataFrame({"id": ids, "name": [f"n-{i}" for i in ids]}, geometry=list(geoms), crs="EPSG:4326")
    store.load_areas(name, frame, name_field="name", id_field="id")


def test_pairs_of_a_loaded_layer(store):
    load_sample_boundaries(store)
    cells = layer_cells(store, "wards")
    assert list(cells.columns) == ["h3_10", "feature_id"] and cells["h3_10"].dtype == np.uint64
    assert all(isinstance(f, str) for f in cells["feature_id"])
    raw = store.query_df("SELECT h3_10, feature_id FROM area_cells WHERE layer = 'wards'")
    assert set(zip(cells["h3_10"].tolist(), cells["feature_id"])) == set(zip(raw["h3_10"].tolist(), raw["feature_id"]))
    assert not cells.duplicated().any() and len(cells) > 1000
    assert {h3.get_resolution(h3.int_to_str(int(c))) for c in cells["h3_10"][:50]} == {10}
    wards = set(store.areas("wards")["feature_id"].astype(str))
    assert set(cells["feature_id"]) <= wards
    order = cells.sort_values(["h3_10", "feature_id"], kind="mergesort")
    assert (order.index == cells.index).all()  # by cell, then feature


def test_distinct_and_the_smaller_feature_first(store):
    """Overlapping features put a cell in two of them: both pairs, the smaller id first; a feature given twice
    stores its cells twice, and they come back once."""
    _layer(store, "overlap", ["b", "a", "a"], [CHELMSFORD, CHELMSFORD, CHELMSFORD])
    stored = store.query_df("SELECT h3_10, feature_id FROM area_cells WHERE layer = 'overlap'")
    cells = layer_cells(store, "overlap")
    n = stored["h3_10"].nunique()
    assert n > 50 and len(stored) == 3 * n and len(cells) == 2 * n
    first = cells.drop_duplicates("h3_10")
    assert (first["feature_id"] == "a").all() and len(first) == n


def test_unknown_layer_is_not_stored(store):
    load_sample_boundaries(store)
    with pytest.raises(NotStored, match=r"no area layer 'beats' is loaded; layers: \['districts', 'wards'\]"):
        layer_cells(store, "beats")
    with pytest.raises(NotStored, match=r"no area layer 'beats' is loaded \(spots are matched within its areas\)"):
        layer_cells(store, "beats", "spots are matched within its areas")


def test_a_layer_without_cells_is_not_stored(store):
    """A feature smaller than a res-10 cell (about 15,000 m2) holds no cell centre: the layer exists, but no
    request can be answered with it."""
    _layer(store, "tiny", ["t"], [box(0.4700, 51.7300, 0.4701, 51.7301)])  # about 7 x 11 m
    assert len(store.areas("tiny")) == 1
    with pytest.raises(NotStored, match="area layer 'tiny' holds no H3 res-10 cell"):
        layer_cells(store, "tiny")
