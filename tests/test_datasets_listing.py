"""GET /datasets never breaks, whatever pandas/DuckDB make of NULLs, and the default dataset is stable.

Runs under the newest pandas/DuckDB pip installs and under the lowest versions pyproject allows (see
docs/dependencies.md: a second venv with the lower bounds runs this file).
"""
from __future__ import annotations

import gzip
import io
import json

import duckdb
import numpy as np
import pandas as pd
import pytest

from tests.conftest import SAMPLE


def _sample_month(month: str, n: int = 400) -> bytes:
    """The first ``n`` rows of one month of the bundled police.uk sample, as CSV bytes."""
    with gzip.open(SAMPLE, "rt", encoding="utf-8") as fh:
        header = fh.readline()
        rows = [line for line in fh if line.split(",", 2)[1] == month][:n]
    return (header + "".join(rows)).encode()


def test_json_value_cleans_every_null_duckdb_hands_pandas():
    from app.render import frame_records, json_value

    frame = duckdb.sql("""SELECT NULL::VARCHAR AS text, NULL::DOUBLE AS num, NULL::TIMESTAMP AS ts,
                                 NULL::VARCHAR[] AS lst, NULL::INTEGER AS i, NULL::BOOLEAN AS b,
                                 'x' AS s, 1.5::DOUBLE AS f, TIMESTAMP '2024-01-01 00:00:00' AS t,
                                 ['month'] AS l, 3::BIGINT AS n, TRUE AS yes""").df()
    rows = frame_records(frame)
    assert rows == [{"text": None, "num": None, "ts": None, "lst": None, "i": None, "b": None, "s": "x", "f": 1.5,
                     "t": "2024-01-01T00:00:00", "l": ["month"], "n": 3, "yes": True}]
    json.dumps(rows, allow_nan=False)  # strict JSON
    assert json_value({"a": [np.float64("nan"), np.int64(2), pd.NA, pd.NaT, float("inf")]}) == {"a": [None, 2, None, None, None]}
    assert json_value(np.array([1.0, np.nan])) == [1.0, None]


def test_object_cell_values_short_path_is_the_general_cleaning():
    """records() cleans object columns through a short path for plain lists (app.render.clean_object_value): the
    same values as the general json_value cleaning (6-decimal floats), NaN, numpy scalars and bools included."""
    from app.render import clean_object_value, json_value

    values = [["High Street", "Parking Area"], [], [{"offence": "Robbery", "harm": 1.23456789, "count": 3}],
              [{"offence": "x", "harm": float("nan"), "count": 1}], [{"offence": "x", "harm": 2.0, "count": np.int64(4)}],
              [{"offence": "x", "flag": True}], [np.str_("a"), "b"], ["a", None], [[1.0, 2]], None, float("nan"),
              "text", [{"n": float("inf")}], [{1: "non-str key"}]]
    for v in values:
        assert clean_object_value(v) == json_value(v, 6), v
        assert json.dumps(clean_object_value(v), allow_nan=False)


def test_response_class_never_writes_nan():
    from app.render import JSONResponse

    body = JSONResponse({"x": float("nan"), "y": np.int64(3), "z": [np.float32(0.5)]}).body
    assert json.loads(body) == {"x": None, "y": 3, "z": [0.5]}
    assert b"NaN" not in body


@pytest.fixture
def fresh(tmp_path):
    from fastapi.testclient import TestClient

    from app.main import create_app
    from geodata.settings import Settings

    def make(**kw):
        return TestClient(create_app(Settings(data_dir=tmp_path / "data", **kw)))

    return make


def test_listing_after_upload_without_area_and_default_stays_first(fresh):
    """The README's upload (no area) left study_area NULL: pandas 3 read it as NaN and /datasets answered 422."""
    with fresh() as api:
        r = api.post("/datasets", data={"dataset": "later"}, files={"files": ("later.csv", _sample_month("2024-04"))})
        assert r.status_code == 201, r.text
        r = api.get("/datasets")
        assert r.status_code == 200, r.text
        body = r.json()
        by_name = {d["name"]: d for d in body["datasets"]}
        assert set(by_name) == {"essex-sample", "later"}
        assert by_name["later"]["study_area"] is None and by_name["later"]["description"] == ""
        assert by_name["later"]["coverage"]["first_month"] == "2024-04"
        assert by_name["later"]["coverage"]["last_day"] == "2024-04-30"
        assert by_name["essex-sample"]["coverage"]["first_day"] == "2024-01-01"
        # the first dataset loaded stays the default: a later upload never takes over /hotspots or the OGC layer
        assert body["default"] == "essex-sample" and body["default_rule"] == "first dataset loaded"
        assert by_name["essex-sample"]["default"] and not by_name["later"]["default"]
        assert api.get("/hotspots", params={"top": 1}).json()["dataset"] == "essex-sample"
        items = api.get("/collections/harm-spots/items", params={"limit": 1, "f": "json"}).json()
        assert items["metadata"]["dataset"] == "essex-sample"
        assert b"NaN" not in api.get("/datasets").content


def test_configured_default_dataset(fresh):
    with fresh(default_dataset="mine") as api:
        assert api.get("/datasets").json()["default_rule"].startswith("first dataset loaded (HARMSPOT_DEFAULT_DATASET")
        api.post("/datasets", data={"dataset": "mine"}, files={"files": ("m.csv", _sample_month("2024-02"))})
        body = api.get("/datasets").json()
        assert body["default"] == "mine" and body["default_rule"].startswith("configured")
        assert api.get("/hotspots", params={"top": 1}).json()["dataset"] == "mine"


def test_rejects_listing_is_strict_json(fresh):
    bad = _sample_month("2024-03", 20).replace(b"2024-03,", b"2024-3x,", 1)
    with fresh(load_sample=False) as api:
        api.post("/datasets", data={"dataset": "r"}, files={"files": ("r.csv", bad)})
        r = api.get("/datasets/r/rejects")
        assert r.status_code == 200 and b"NaN" not in r.content
        assert r.json()["rows"][0]["line"] == 2
