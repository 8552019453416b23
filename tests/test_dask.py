"""The Dask executor (partitioned Parquet, local cluster) returns exactly what the embedded engine returns."""
from __future__ import annotations


import numpy as np
import pandas as pd
import pytest

from hotspots.ranking.harmspots import harm_spots
from hotspots.ranking.query import HotspotQuery

dask = pytest.importorskip("dask")
distributed = pytest.importorskip("distributed")

HO = ["008/01", "034/01", "105/01", "058/01", "039/00", "092/01", "005/01", "066/01", "028/01"]
TITLES = ["Wounding", "Robbery of personal property", "Common assault", "Criminal damage", "Theft from person",
          "Supply of drugs", "Wounding with intent", "Public fear alarm distress", "Burglary dwelling"]


def synthetic_extract(n: int = 6000, seed: int = 11) -> bytes:
    """A force extract with times, HO codes and every flag (some missing), around Southend."""
    rng = np.random.default_rng(seed)
    when = pd.Timestamp("2024-02-01") + pd.to_timedelta(rng.integers(0, 60 * 24 * 70, n), unit="min")
    code = rng.integers(0, len(HO), n)

    def flag(p_true: float, p_missing: float) -> list[str]:
        v = np.where(rng.random(n) < p_true, "Y", "N").astype(object)
        v[rng.random(n) < p_missing] = ""
        return v.tolist()

    age = rng.integers(5, 90, n).astype(object)
    age[rng.random(n) < 0.2] = ""
    frame = pd.DataFrame({
        "crime_ref": [f"SX{i:06d}" for i in range(n)], "occurred": when.strftime("%Y-%m-%d %H:%M"),
        "longitude": 0.71 + rng.normal(0, 0.01, n).round(5), "latitude": 51.54 + rng.normal(0, 0.006, n).round(5),
        "ho_code": np.array(HO)[code], "offence_title": np.array(TITLES)[code],
        "domestic": flag(0.3, 0.1), "public_place": flag(0.6, 0.1), "knife": flag(0.2, 0.3),
        "nte": flag(0.15, 0.5), "victim_age": age})
    return frame.to_csv(index=False).encode()


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    from app.state import load_sample, load_weights
    from geodata.ingest import parse_files
    from geodata.settings import Settings
    from geodata.store import Store
    from hotspots.executors.dask_backend import export_parquet

    tmp = tmp_path_factory.mktemp("dask")
    settings = Settings(data_dir=tmp)
    store = Store(settings.store_path)
    weights = load_weights(settings, store)
    load_sample(store)
    store.ingest("extract", parse_files([("extract.csv", synthetic_extract())]))
    info = export_parquet(store, tmp / "parquet")
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                       host="127.0.0.1")
    client = distributed.Client(cluster)
    yield store, weights, tmp / "parquet", info
    client.close()
    cluster.close()
    store.close()


def test_export_is_partitioned_by_dataset_and_month(env):
    store, _, path, info = env
    assert info["rows"] == int(store.scalar("SELECT count(*) FROM offences"))
    months = sorted(p.name for p in (path / "dataset=essex-sample").iterdir())
    assert months == ["month=2024-01", "month=2024-02", "month=2024-03", "month=2024-04"]
    assert (path / "dataset=extract").exists()


QUERIES = [
    {"dataset": "essex-sample"},
    {"dataset": "essex-sample", "preset": "all-crime", "resolution": 8, "rank_by": "count", "top": None},
    {"dataset": "essex-sample", "area": "districts:Southend-on-Sea", "from": "2024-02", "to": "2024-04"},
    {"dataset": "essex-sample", "offences": ["robbery", "Drugs"], "bbox": (0.5, 51.5, 0.8, 51.7), "resolution": 9},
    {"dataset": "extract", "preset": "op-ark", "from": "2024-02", "to": "2024-04", "top": None},
    {"dataset": "extract", "preset": "community-violence", "from": "2024-02-10", "to": "2024-03-31"},
    {"dataset": "extract", "preset": "near-miss", "from": "2024-02", "to": "2024-04", "resolution": 11},
    {"dataset": "extract", "preset": "nte", "from": "2024-02", "to": "2024-04", "resolution": 9},
    {"dataset": "extract", "preset": "all-crime", "days": [4, 5], "hours": [20, 21, 22, 23, 0, 1], "resolution": 7},
    {"dataset": "extract"},  # default period: last 14 days of timed data
]


@pytest.mark.parametrize("spec", QUERIES, ids=[str(i) for i in range(len(QUERIES))])
def test_identical_to_embedded_engine(env, spec):
    from hotspots.executors.dask_backend import dask_harm_spots

    store, weights, path, _ = env
    q = HotspotQuery.model_validate(spec)
    a = harm_spots(store, q, weights)
    b = dask_harm_spots(store, path, q, weights)
    assert a.meta() == b.meta()
    ca, cb = a.top_cells, b.top_cells
    assert len(ca) > 0 or spec["preset"] == "near-miss"
    assert ca["h3"].tolist() == cb["h3"].tolist()
    assert ca["count"].tolist() == cb["count"].tolist()
    assert np.allclose(ca["harm"], cb["harm"], rtol=1e-12, atol=1e-9)
    assert ca["top_offences"].tolist() == cb["top_offences"].tolist()
    assert a.total_count == b.total_count and a.not_applied == b.not_applied


def test_unknown_dataset_in_export(env):
    from geodata.store import StoreError
    from hotspots.executors.dask_backend import dask_harm_spots

    store, weights, path, _ = env
    with pytest.raises(StoreError):
        dask_harm_spots(store, path, HotspotQuery(dataset="nope"), weights)
