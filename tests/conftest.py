"""Shared fixtures: real data from ../shared/data (skipped with a reason when absent) and temporary stores."""
from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"
ESSEX = SHARED / "crime" / "essex_street_2024-01_to_2024-04.csv.gz"
LEICS = SHARED / "crime" / "leicestershire_street_2019-12_to_2022-10.csv.gz"
CCHI = SHARED / "harm_weights" / "cchi_2020_values.csv"
SAMPLE = ROOT / "sample" / "essex_street_2024-01_to_2024-04.csv.gz"


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real data not available: {path} (../shared/data is expected beside the repo)")
    return path


@pytest.fixture
def store(tmp_path):
    from geodata.harm import load_open_default
    from geodata.store import Store

    s = Store(tmp_path / "store.duckdb")
    s.save_weights(load_open_default())
    yield s
    s.close()


@pytest.fixture(scope="session")
def cchi():
    from geodata.harm import load_weights_file

    return load_weights_file(need(CCHI), "cchi-2020")


@pytest.fixture(scope="session")
def essex_parsed():
    from app.state import SAMPLE_DISTRICTS
    from geodata.ingest import StudyArea, parse_files

    area = StudyArea.from_geojson(SAMPLE_DISTRICTS, "Essex districts")
    return parse_files([(str(SAMPLE), None)], area), area


@pytest.fixture
def loaded(store, essex_parsed):
    """A fresh store with the bundled Essex sample ingested as dataset "essex" and the sample's boundaries."""
    parsed, area = essex_parsed
    store.ingest("essex", parsed, area)
    from app.state import load_sample_boundaries

    load_sample_boundaries(store)
    return store


@pytest.fixture(scope="session")
def api(tmp_path_factory):
    """A TestClient on a fresh store with the bundled sample loaded (as `make serve` does)."""
    from fastapi.testclient import TestClient

    from app.main import create_app
    from geodata.settings import Settings

    settings = Settings(data_dir=tmp_path_factory.mktemp("api"))
    with TestClient(create_app(settings)) as client:
        yield client
