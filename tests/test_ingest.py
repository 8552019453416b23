"""Ingest on real data: row accounting, rejects with reasons, idempotence, all-or-nothing batches."""
from __future__ import annotations

import gzip
import io
import json
import zipfile

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from geodata.ingest import IngestError, StudyArea, parse_files
from tests.conftest import ESSEX, LEICS, need


def test_essex_row_accounting(store):
    parsed = parse_files([(str(need(ESSEX)), None)])
    assert parsed.read == 52_837
    report = store.ingest("essex", parsed)
    assert report.stored + report.rejected + report.duplicates == report.read
    assert report.rejects_by_reason == {"missing coordinates": 1_394}  # the README's count of rows without coordinates
    assert report.time_precision == ["month"]
    assert store.scalar("SELECT count(*) FROM offences") == report.stored


def test_leicestershire_row_accounting(store):
    parsed = parse_files([(str(need(LEICS)), None)])
    assert parsed.read == 301_838
    report = store.ingest("leics", parsed)
    assert report.stored + report.rejected + report.duplicates == report.read
    assert report.rejects_by_reason["missing coordinates"] == 7_463
    # stray points far outside Great Britain's box are rejected as outside the study area, not dropped
    assert sum(report.rejects_by_reason.values()) == report.rejected
    asb = store.scalar("""SELECT count(*) FROM offences o JOIN offence_keys k USING (offence_key)
                          WHERE k.category = 'Anti-social behaviour'""")
    assert 0 < asb <= 33_364  # ASB rows have no Crime ID; they are kept distinct by a content hash


def test_reingest_is_idempotent(store, essex_parsed):
    parsed, area = essex_parsed
    first = store.ingest("essex", parsed, area)
    n = store.scalar("SELECT count(*) FROM offences")
    second = store.ingest("essex", parsed, area)
    assert second.stored == 0 and second.duplicates == first.stored
    assert store.scalar("SELECT count(*) FROM offences") == n
    # identical ASB rows (same month, point, text) are distinct incidents and stay distinct
    ids = store.query_df("SELECT record_id FROM offences WHERE record_id LIKE 'hash:%'")["record_id"]
    assert ids.is_unique and ids.str.endswith(":1").any()


def test_failed_batch_leaves_store_unchanged(store, essex_parsed, monkeypatch):
    parsed, area = essex_parsed
    store.ingest("essex", parsed, area)
    before = store.query_df("SELECT count(*) AS n, sum(lon) AS s FROM offences").iloc[0].tolist()
    batches = store.scalar("SELECT count(*) FROM batches")
    rejects = store.scalar("SELECT count(*) FROM rejects")
    extra = parsed.rows.copy()
    extra["record_id"] = "new-" + extra["record_id"]
    from geodata import store as store_mod

    def boom(*a, **k):
        raise RuntimeError("simulated crash after the offences were inserted")

    monkeypatch.setattr(store_mod.Store, "_refresh_dataset_cells", boom)
    with pytest.raises(RuntimeError):
        store.ingest("essex", type(parsed)(extra, parsed.rejects, parsed.read, parsed.kind, parsed.files), area)
    assert store.query_df("SELECT count(*) AS n, sum(lon) AS s FROM offences").iloc[0].tolist() == before
    assert store.scalar("SELECT count(*) FROM batches") == batches
    assert store.scalar("SELECT count(*) FROM rejects") == rejects


def test_zip_of_monthly_files_equals_concatenation(tmp_path):
    frame = pd.read_csv(need(ESSEX), dtype=str, nrows=3000)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for month, part in frame.groupby("Month"):
            z.writestr(f"{month}/{month}-essex-street.csv", part.to_csv(index=False))
    parsed = parse_files([("download.zip", buf.getvalue())])
    assert parsed.read == 3000 and len(parsed.rows) + len(parsed.rejects) == 3000


def test_bad_rows_rejected_with_line_and_reason():
    csv = (
        "Crime ID,Month,Reported by,Falls within,Longitude,Latitude,Location,LSOA code,LSOA name,Crime type,"
        "Last outcome category,Context\n"
        "a1,2024-01,Essex Police,Essex Police,0.5,51.7,On or near X,E01,L,Robbery,,\n"
        "a2,2024-01,Essex Police,Essex Police,,,No Location,,,Robbery,,\n"
        "a3,2024-13,Essex Police,Essex Police,0.5,51.7,On or near X,E01,L,Robbery,,\n"
        "a4,2024-01,Essex Police,Essex Police,abc,51.7,On or near X,E01,L,Robbery,,\n"
        "a5,2024-01,Essex Police,Essex Police,0.5,51.7,On or near X,E01,L,Space piracy,,\n"
        "a6,2024-01,Essex Police,Essex Police,-3.0,40.0,On or near X,E01,L,Robbery,,\n"
    ).encode()
    parsed = parse_files([("m.csv", csv)])
    got = {int(r.line): r.reason for r in parsed.rejects.itertuples()}
    assert got == {3: "missing coordinates", 4: "bad date: Month is not YYYY-MM", 5: "invalid coordinates",
                   6: "unknown offence: Crime type not a data.police.uk category",
                   7: "outside the study area (Great Britain (default bounding box))"}
    assert parsed.rows["record_id"].tolist() == ["a1"]


EXTRACT = """URN,Committed,Easting,Northing,HO Code,Offence,Location,Domestic Abuse,Public Place,Knife Enabled,Victim Age
E1,2024-03-02 23:15,588000,185000,008/06,Assault occasioning actual bodily harm,High Street,N,Y,N,24
E2,2024-03-02,588010,185010,034/01,Robbery (Personal),High Street,no,yes,yes,19
E3,02/03/2024 01:05,588020,185020,,Wounding with intent to do grievous bodily harm,Station Road,0,1,0,
E4,2024-03-03 10:00,,185000,008/06,,High Street,N,Y,N,30
E5,2024-03-03 10:00,588000,185000,8x/06,,High Street,N,Y,N,30
E6,not a date,588000,185000,008/06,,High Street,N,Y,N,30
E7,2024-03-03 10:00,588000,185000,008/06,,High Street,maybe,Y,N,30
E8,2024-03-03 10:00,588000,185000,008/06,,High Street,N,Y,N,130
"""


def test_force_extract_mapping_precision_and_flags():
    parsed = parse_files([("extract.csv", EXTRACT.encode("cp1252"))])
    assert parsed.kind == "extract"
    rows = parsed.rows.set_index("record_id")
    assert list(rows.index) == ["E1", "E2", "E3"]
    assert rows.loc["E1", "precision"] == "minute" and rows.loc["E2", "precision"] == "day"
    assert rows.loc["E3", "occurred_from"] == pd.Timestamp("2024-03-02 01:05")  # UK day-first
    assert rows.loc["E1", "hour"] == 23 and rows.loc["E1", "dow"] == 5  # Saturday
    assert pd.isna(rows.loc["E2", "hour"])  # a date without time invents no hour
    assert rows.loc["E1", "offence_group"] == "assault_with_injury"
    assert rows.loc["E2", "offence_group"] == "robbery_personal" and bool(rows.loc["E2", "knife"])
    assert rows.loc["E3", "offence_group"] == "wounding_intent"  # from the title alone
    assert not bool(rows.loc["E1", "domestic"]) and bool(rows.loc["E1", "public_place"])
    assert abs(rows.loc["E1", "x"] - 588000) < 1e-6  # BNG kept; lon/lat derived with pyproj
    assert 0.6 < rows.loc["E1", "lon"] < 0.8 and 51.5 < rows.loc["E1", "lat"] < 51.6
    reasons = {int(r.line): r.reason for r in parsed.rejects.itertuples()}
    assert reasons[5] == "missing coordinates"
    assert reasons[6] == "unknown offence: HO code is not of the form NNN/NN"
    assert reasons[7].startswith("bad date")
    assert reasons[8].startswith("invalid domestic flag")
    assert reasons[9].startswith("invalid victim_age")


def test_extract_without_usable_columns_is_a_clear_error():
    with pytest.raises(IngestError, match="missing .*coordinates"):
        parse_files([("x.csv", b"id,when,what\n1,2024-01-01,robbery\n")])


def test_geojson_and_parquet(tmp_path):
    fc = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [0.71, 51.54]},
         "properties": {"record_id": "g1", "occurred": "2024-02-10 22:00", "ho_code": "034/01"}},
        {"type": "Feature", "geometry": {"type": "LineString", "coordinates": [[0.7, 51.5], [0.8, 51.6]]},
         "properties": {"record_id": "g2", "occurred": "2024-02-10", "ho_code": "034/01"}},
    ]}
    parsed = parse_files([("p.geojson", json.dumps(fc).encode())])
    assert parsed.rows["record_id"].tolist() == ["g1"]
    assert parsed.rejects["reason"].iloc[0].startswith("invalid coordinates: geometry is LineString")

    frame = pd.DataFrame({"record_id": ["p1", "p2"], "occurred": pd.to_datetime(["2024-01-05 10:00", "2024-01-06"], format="ISO8601"),
                          "longitude": [0.71, 0.72], "latitude": [51.54, 51.55], "category": ["Robbery", "Drugs"]})
    path = tmp_path / "x.parquet"
    frame.to_parquet(path)
    parsed = parse_files([(str(path), None)])
    assert len(parsed.rows) == 2 and set(parsed.rows["category"]) == {"Robbery", "Drugs"}


def test_gzip_and_bad_gzip():
    data = gzip.compress(EXTRACT.encode())
    assert len(parse_files([("e.csv.gz", data)]).rows) == 3
    with pytest.raises(IngestError, match="not a valid gzip"):
        parse_files([("e.csv.gz", b"nope")])


def test_study_area_polygon_rejects_outside(essex_parsed):
    parsed, area = essex_parsed
    assert isinstance(area, StudyArea)
    outside = parsed.rejects[parsed.rejects["reason"].str.startswith("outside")]
    assert 0 < len(outside) < 100  # a few stray points (the shared README: 99.92% inside the force area)
    assert np.all(area.contains(parsed.rows["lon"].to_numpy(), parsed.rows["lat"].to_numpy()))


POLICEUK_HEADER = ("Crime ID,Month,Reported by,Falls within,Longitude,Latitude,Location,LSOA code,LSOA name,Crime type,"
                   "Last outcome category,Context\n")


def test_empty_month_is_a_row_reject_not_a_crash():
    csv = (POLICEUK_HEADER + "a1,2024-01,E,E,0.5,51.7,On or near X,E01,L,Robbery,,\n"
           "a2,,E,E,0.5,51.7,On or near X,E01,L,Robbery,,\n").encode()
    parsed = parse_files([("m.csv", csv)])
    assert {int(r.line): r.reason for r in parsed.rejects.itertuples()} == {3: "bad date: Month is not YYYY-MM"}
    assert parsed.rows["record_id"].tolist() == ["a1"]


def test_memory_mapped_csv_with_bom_and_cp1252(tmp_path):
    body = POLICEUK_HEADER + "a1,2024-01,E,E,0.5,51.7,On or near Caf\u00e9,E01,L,Robbery,,\n"
    (tmp_path / "bom.csv").write_bytes(b"\xef\xbb\xbf" + body.encode("utf-8"))
    (tmp_path / "cp.csv").write_bytes(body.encode("cp1252"))
    for name in ("bom.csv", "cp.csv"):
        rows = parse_files([(str(tmp_path / name), None)]).rows
        assert rows["record_id"].tolist() == ["a1"] and rows["location"].tolist() == ["On or near Caf\u00e9"]


def test_repeated_ids_in_one_batch_keep_the_first_by_file_and_line(store):
    first = POLICEUK_HEADER + "d1,2024-01,E,E,0.5,51.7,First,E01,L,Robbery,,\nd2,2024-01,E,E,0.5,51.7,X,E01,L,Drugs,,\n"
    second = POLICEUK_HEADER + "d1,2024-02,E,E,0.6,51.7,Second,E01,L,Robbery,,\n"
    parsed = parse_files([("b.csv", second.encode()), ("a.csv", first.encode())])
    report = store.ingest("dup", parsed)
    assert (report.stored, report.duplicates) == (2, 1)
    assert store.scalar("SELECT location FROM offences WHERE record_id = 'd1'") == "First"  # a.csv sorts first
    again = store.ingest("dup", parsed)
    assert (again.stored, again.duplicates) == (0, 3)


def test_distinct_point_projection_matches_the_direct_one():
    from geodata.cells import cells_at_all_resolutions, lonlat_to_bng
    from geodata.ingest import geo_columns

    rng = np.random.default_rng(3)
    points = rng.uniform([-1.5, 52.4], [-0.8, 52.8], (2_000, 2)).round(6)
    idx = rng.integers(0, len(points), 30_000)
    lon, lat = points[idx, 0].copy(), points[idx, 1].copy()
    got = geo_columns(lon, lat)
    x, y = lonlat_to_bng(lon, lat)
    assert np.array_equal(got["x"].to_numpy(), x) and np.array_equal(got["y"].to_numpy(), y)
    for res, cells in cells_at_all_resolutions(lat, lon).items():
        assert np.array_equal(got[f"h3_{res}"].to_numpy(), cells)


def _physical_order(store, dataset: str) -> np.ndarray:
    return store.query_df("SELECT occurred_from FROM offences WHERE dataset = ? ORDER BY rowid",
                          [dataset])["occurred_from"].to_numpy()


def test_batch_out_of_time_order_is_stored_in_time_order(store, essex_parsed, monkeypatch):
    """A batch whose rows arrive out of time order is rewritten sorted by occurred_from (so a period filter
    skips row groups); the stored rows and the duplicate rule (first copy by file and line) are unchanged."""
    from geodata import store as store_mod
    from geodata.ingest import Parsed

    monkeypatch.setattr(store_mod, "ROW_GROUP_ROWS", 1_000)  # the sample holds 51 windows of this size
    parsed, area = essex_parsed
    rng = np.random.default_rng(5)
    shuffled = parsed.table.take(rng.permutation(parsed.table.num_rows))
    # a repeated id in two months, the later month first in the file: the first copy by line must stay
    rid = shuffled.column("record_id")[0].as_py()
    dup = shuffled.slice(0, 1).set_column(shuffled.schema.get_field_index("location"), "location",
                                          pa.array(["later copy"], pa.string()))
    batch = Parsed(pa.concat_tables([shuffled, dup]), parsed.rejects, parsed.read + 1, parsed.kind, parsed.files)
    report = store.ingest("shuffled", batch, area)
    plain = store.ingest("ordered", parsed, area)
    assert report.duplicates == 1 and report.stored == plain.stored
    order = _physical_order(store, "shuffled")
    assert (np.diff(order.astype("datetime64[us]").astype(np.int64)) >= 0).all()
    assert store.scalar("SELECT location FROM offences WHERE dataset = 'shuffled' AND record_id = ?", [rid]) \
        == shuffled.column("location")[0].as_py()
    cols = "record_id, offence_key, occurred_from, occurred_to, lon, lat, h3_10, location"
    a = store.query_df(f"SELECT {cols} FROM offences WHERE dataset = 'shuffled' ORDER BY record_id")
    b = store.query_df(f"SELECT {cols} FROM offences WHERE dataset = 'ordered' ORDER BY record_id")
    pd.testing.assert_frame_equal(a, b)


def test_batch_in_time_order_is_not_rewritten(store, essex_parsed, monkeypatch):
    from geodata import store as store_mod

    calls = []
    monkeypatch.setattr(store_mod, "ROW_GROUP_ROWS", 1_000)
    monkeypatch.setattr(store_mod, "_order_batch_by_time", lambda *a: calls.append(a))
    parsed, area = essex_parsed
    ordered = parsed.table.sort_by([("occurred_from", "ascending")])
    store.ingest("ordered", type(parsed)(ordered, parsed.rejects, parsed.read, parsed.kind, parsed.files), area)
    assert calls == []
    # chunk boundaries do not matter: windows of rows are measured across them
    tracker = store_mod.TimeOrder(window=1_000)
    for i in range(0, ordered.num_rows, 700):
        tracker.see(ordered.slice(i, 700))
    assert tracker.clustered
    # months interleaved within a few (files of a few months each, concatenated) stay as they are
    days = np.array(["2019-01-01", "2019-03-01", "2019-02-01", "2019-04-01"] * 250, dtype="datetime64[us]")
    local = [pa.table({"occurred_from": pa.array(days + np.timedelta64(k * 120, "D"))}) for k in range(40)]
    tracker = store_mod.TimeOrder(window=1_000)
    for t in local:
        tracker.see(t)
    assert tracker.clustered
    # a shuffled batch is not clustered
    rng = np.random.default_rng(1)
    tracker = store_mod.TimeOrder(window=1_000)
    tracker.see(ordered.take(rng.permutation(ordered.num_rows)))
    assert not tracker.clustered
