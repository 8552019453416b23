"""Public output mode (engine and in-process API): small cells withheld before ranking, one published resolution,
totals over published cells only, fixed periods and presets. The differencing attacks of issue 13.12 run against a
real keyed server in tests/test_issue13_security.py."""
from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from geodata.settings import Settings
from hotspots.publish.disclosure import DisclosureError, DisclosurePolicy, public_harm_spots
from hotspots.ranking.harmspots import harm_spots
from hotspots.ranking.query import HotspotQuery

Q = {"dataset": "essex-sample", "from": "2024-04", "to": "2024-04", "preset": "all-crime"}


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    app = create_app(Settings(data_dir=tmp_path_factory.mktemp("disc")))
    with TestClient(app) as client:
        yield client, app.state.harmspot


def test_engine_suppresses_and_coarsens(service):
    _, state = service
    q = HotspotQuery.model_validate({**Q, "resolution": 10, "top": None})
    full8 = harm_spots(state.store, q.model_copy(update={"resolution": 8}), state.default_weights)
    pub = public_harm_spots(state.store, q, state.default_weights, DisclosurePolicy(5, 8))
    assert pub.query.resolution == 8
    assert (pub.cells["count"] >= 5).all()
    small = full8.cells[full8.cells["count"] < 5]
    assert len(small) > 0, "the sample should have small cells to suppress"
    assert not set(small["cell"]) & set(pub.cells["cell"])
    assert len(pub.cells) == int((full8.cells["count"] >= 5).sum())
    assert pub.total_count == int(pub.cells["count"].sum())  # totals over published cells only
    assert pub.total_harm == pytest.approx(float(pub.cells["harm"].sum()))
    assert pub.cells["rank"].tolist() == list(range(1, len(pub.cells) + 1))
    harm = pub.cells["harm"].to_numpy()
    digits = np.floor(np.log10(harm))  # 2 significant figures: harm / 10^(digits-1) is a whole number
    assert np.allclose(harm / 10 ** (digits - 1), np.round(harm / 10 ** (digits - 1)))
    assert all(o["count"] >= 5 for offs in pub.cells["top_offences"] for o in offs)
    for offs, n in zip(pub.cells["top_offences"], pub.cells["count"]):  # the rest of a cell: 0 or >= k
        rest = n - sum(o["count"] for o in offs)
        assert rest == 0 or rest >= 5
    assert "top_locations" in full8.cells.columns  # internal output has street context; public output has none
    assert pub.cells["top_locations"].isna().all() and pub.cells["police_station_share"].isna().all()
    meta = pub.meta()
    assert any("street context" in c for c in meta["caveats"])
    assert meta["disclosure"]["cells_withheld"] == len(small)
    assert meta["disclosure"]["resolution_requested"] == 10 and meta["resolution"] == 8
    assert any("withheld" in c for c in meta["caveats"])


def test_k_is_a_setting(service):
    _, state = service
    q = HotspotQuery.model_validate({**Q, "resolution": 8, "top": None})
    k10 = public_harm_spots(state.store, q, state.default_weights, DisclosurePolicy(10, 8))
    k5 = public_harm_spots(state.store, q, state.default_weights, DisclosurePolicy(5, 8))
    assert (k10.cells["count"] >= 10).all() and len(k10.cells) < len(k5.cells)
    coarse = public_harm_spots(state.store, q, state.default_weights, DisclosurePolicy(5, 7))
    assert coarse.query.resolution == 7


def test_suppression_before_top_n(service):
    _, state = service
    q = HotspotQuery.model_validate({**Q, "resolution": 8, "top": 10_000, "rank_by": "count"})
    pub = public_harm_spots(state.store, q, state.default_weights)
    assert pub.top_cells["rank"].tolist() == list(range(1, len(pub.top_cells) + 1))
    assert (pub.top_cells["count"] >= 5).all()


def test_differencing_handles_refused(service):
    _, state = service
    for extra in ({"hours": [1, 2]}, {"days": [4]}, {"from": "2024-03-05", "to": "2024-04-04"},
                  {"from": "2024-03", "to": "2024-04"}, {"offences": ["robbery"]}, {"include_asb": True},
                  {"method": "forecast"}, {"from": "2024-05", "to": "2024-05"}):
        q = HotspotQuery.model_validate({**Q, **extra})
        with pytest.raises(DisclosureError):
            public_harm_spots(state.store, q, state.default_weights)
    q = HotspotQuery.model_validate({**Q, "from": "2024-03-01", "to": "2024-03-31"})  # a whole month, as days
    assert public_harm_spots(state.store, q, state.default_weights).period_from.month == 3
    quarterly = DisclosurePolicy(period="quarter")
    with pytest.raises(DisclosureError):  # months are not published where quarters are
        public_harm_spots(state.store, q, state.default_weights, quarterly)
    with pytest.raises(ValueError):  # overlapping public presets are refused when the policy is made
        DisclosurePolicy(presets=("all-crime", "op-ark"))


def test_api_public_mode(service):
    client, _ = service
    r = client.get("/hotspots", params={**Q, "mode": "public", "resolution": 10, "top": 20})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["resolution"] == 8 and body["disclosure"]["min_count"] == 5
    assert all(c["count"] >= 5 for c in body["cells"])
    geo = client.get("/hotspots.geojson", params={**Q, "mode": "public", "top": 5}).json()
    assert geo["metadata"]["disclosure"]["mode"] == "public"
    assert all(f["properties"]["count"] >= 5 for f in geo["features"])
    csv = client.get("/hotspots", params={**Q, "mode": "public", "format": "csv", "top": 5})
    assert csv.status_code == 200 and csv.text.startswith("h3,")
    bad = client.get("/hotspots", params={**Q, "mode": "public", "hours": "1-2"})
    assert bad.status_code == 403 and "public output" in bad.json()["error"]["message"]  # a policy refusal
    assert bad.json()["error"]["code"] == "disclosure_refused"
    assert client.get("/hotspots", params={**Q, "mode": "secret"}).status_code == 422
    internal = client.get("/hotspots", params={**Q, "resolution": 10, "top": 5}).json()
    assert internal["resolution"] == 10 and "disclosure" not in internal
