import warnings

import h3
import numpy as np
import pytest
import shapely

from hotspots.stats.gistar import (apply_transform, bh_qvalues, domain_from_cells, domain_from_hull, domain_from_polygon,
                             gistar, neighbour_matrix, permutation_counts, distinct_sample_rows)

CENTRE = h3.latlng_to_cell(52.6369, -1.1398, 9)  # Leicester clock tower


def disk(k: int, centre: str = CENTRE) -> np.ndarray:
    return np.array(sorted(h3.str_to_int(c) for c in h3.grid_disk(centre, k)), dtype=np.uint64)


@pytest.fixture(scope="module")
def grid():
    dom = domain_from_cells(disk(25))  # 1,951 cells
    return dom, neighbour_matrix(dom.cells, 1)


def test_neighbour_matrix_counts_self_and_ring(grid):
    dom, w = grid
    card = np.asarray(w.sum(axis=1)).ravel()
    assert card.max() == 7 and card.min() >= 3  # interior: self + 6; edge cells lose outside neighbours
    assert (w.diagonal() == 1).all()
    assert (w != w.T).nnz == 0
    w2 = neighbour_matrix(dom.cells, 2)
    assert np.asarray(w2.sum(axis=1)).max() == 19
    w0 = neighbour_matrix(dom.cells, 1, include_self=False)
    assert w0.diagonal().sum() == 0


def test_z_matches_esda_exactly(grid):
    from esda.getisord import G_Local
    from libpysal.weights import W

    dom, w = grid
    rng = np.random.default_rng(3)
    y = rng.poisson(0.4, len(dom)) * rng.gamma(0.8, 30.0, len(dom))  # zero-inflated, heavy tailed "harm"
    res = gistar(dom.cells, y, dom, weights=w)
    wl = W.from_sparse(neighbour_matrix(dom.cells, 1, include_self=False))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = G_Local(y, wl, transform="B", star=True, permutations=0)
    assert np.max(np.abs(res.cells["z"].to_numpy() - ref.Zs)) < 1e-9
    assert np.max(np.abs(res.cells["g"].to_numpy() - ref.Gs)) < 1e-12


def test_planted_cluster_is_found(grid):
    dom, w = grid
    rng = np.random.default_rng(7)
    y = rng.poisson(1.0, len(dom)).astype(float)
    hot_centre = h3.grid_disk(CENTRE, 10)[-1]  # somewhere off-centre
    cluster = np.array([h3.str_to_int(c) for c in h3.grid_disk(hot_centre, 2)], dtype=np.uint64)
    idx, inside = dom.index_of(cluster)
    y[idx[inside]] += rng.poisson(5.0, inside.sum())
    res = gistar(dom.cells, y, dom, weights=w).cells
    sig = res[res.significant]
    assert int(h3.str_to_int(hot_centre)) in set(sig.cell.tolist())
    assert res.loc[idx[inside], "significant"].mean() > 0.8
    # significant cells lie in or next to the cluster
    near = set(h3.str_to_int(c) for c in h3.grid_disk(hot_centre, 3))
    assert np.mean([c in near for c in sig.cell.tolist()]) > 0.9
    assert (res.loc[idx[inside][0], "class"]).startswith("hot_")
    # permutation inference finds it too; with m cells BH needs p <= q*k/m, and the smallest permutation p is
    # 1/(permutations+1), so a 19-cell cluster among 1,951 cells needs more than 999 permutations
    perm = gistar(dom.cells, y, dom, weights=w, permutations=9999, seed=1).cells
    assert perm.loc[idx[inside], "significant"].mean() > 0.6
    assert perm.loc[perm.cell == h3.str_to_int(hot_centre), "significant"].all()


def test_uniform_field_few_false_positives(grid):
    dom, w = grid
    uncorrected, fdr = [], []
    for seed in range(5):
        y = np.random.default_rng(seed).poisson(5.0, len(dom)).astype(float)
        res = gistar(dom.cells, y, dom, weights=w).cells
        uncorrected.append((res.p <= 0.05).mean())
        fdr.append(res.significant.sum())
    assert np.mean(uncorrected) <= 0.06
    assert np.mean(fdr) <= 1.0  # ~0 FDR-significant cells


def test_permutation_counts_equal_brute_force():
    dom = domain_from_cells(disk(6))
    w = neighbour_matrix(dom.cells, 1)
    rng = np.random.default_rng(0)
    y = rng.poisson(0.7, len(dom)) * np.round(rng.gamma(1, 10, len(dom)), 1)
    ge, le = permutation_counts(y, w, 199, seed=5)
    rids = distinct_sample_rows(np.random.default_rng(5), len(dom) - 1, 199, 6)
    n = len(y)
    card = np.diff(w.indptr) - 1
    lag_other = w @ y - y
    for i in range(n):  # the straightforward esda-style loop
        pool = np.delete(y, i)
        sims = pool[rids[:, :card[i]]].sum(axis=1)
        assert ge[i] == (sims >= lag_other[i] - 1e-9).sum()
        assert le[i] == (sims <= lag_other[i] + 1e-9).sum()


def test_distinct_rows_are_without_replacement():
    for pool in (10, 5000):
        r = distinct_sample_rows(np.random.default_rng(1), pool, 300, 6)
        s = np.sort(r, axis=1)
        assert not (s[:, 1:] == s[:, :-1]).any() and r.max() < pool


def test_bh_matches_statsmodels():
    from statsmodels.stats.multitest import multipletests

    p = np.random.default_rng(2).uniform(size=500) ** 3
    assert np.allclose(bh_qvalues(p), multipletests(p, method="fdr_bh")[1])


def test_classes_tails_and_constant_field(grid):
    dom, w = grid
    y = np.zeros(len(dom))
    res = gistar(dom.cells, y, dom, weights=w)
    assert (res.cells.z == 0).all() and (res.cells["class"] == "not_significant").all()
    y[:50] = 100.0
    both = gistar(dom.cells, y, dom, weights=w, tail="both").cells
    assert set(both["class"]) <= {"hot_99", "hot_95", "hot_90", "neighbourhood_hot", "cold_99", "cold_95", "cold_90",
                                  "not_significant"}
    hot = gistar(dom.cells, y, dom, weights=w).cells
    assert not hot["class"].str.startswith("cold").any()


def test_hot_only_through_neighbours_is_its_own_class_and_never_a_patrol_candidate(grid):
    """A zero cell next to a cluster can be Gi*-hot (its neighbourhood sum is high): it gets
    'neighbourhood_hot', not 'hot_*', and patrol_candidate is false; hot cells with a value of their own keep
    their tier. z and q are unchanged (the cross-checks against esda still hold)."""
    dom, w = grid
    y = np.zeros(len(dom))
    y[:50] = 100.0
    res = gistar(dom.cells, y, dom, weights=w)
    c = res.cells
    tier = c["class"].str.startswith("hot_")
    assert tier.any() and (c.loc[tier, "raw"] > 0).all()
    nb = c["class"] == "neighbourhood_hot"
    assert nb.any() and (c.loc[nb, "raw"] == 0).all() and (c.loc[nb, "q"] <= 0.10).all() and (c.loc[nb, "z"] > 0).all()
    assert c["patrol_candidate"].equals(tier)
    s = res.summary()
    assert s["n_patrol_candidates"] == int(tier.sum()) and "no harm in the cell" in s["class_labels"]["neighbourhood_hot"]
    assert s["class_q_levels"] == {"hot_99": 0.01, "hot_95": 0.05, "hot_90": 0.10}
    assert "no offences in the cell" in res.summary("count")["class_labels"]["neighbourhood_hot"]


def test_transforms_reported():
    v = np.array([0, 1, 2, 3, 1000.0])
    t, name, note = apply_transform(v, "cap", cap=10)
    assert t.max() == 10 and name == "cap" and "1 cells capped" in note
    t, name, _ = apply_transform(v, "log")
    assert np.isclose(t[-1], np.log1p(1000)) and name == "log"
    with pytest.raises(ValueError):
        apply_transform(v, "sqrt")


def test_domains_fill_zero_cells_and_report_source():
    lat, lon = h3.cell_to_latlng(CENTRE)
    corners = [(lat, lon), (lat + 0.02, lon), (lat, lon + 0.03)]  # ~2 km apart
    data = np.concatenate([disk(1, h3.latlng_to_cell(a, b, 9)) for a, b in corners])
    hull = domain_from_hull(data)
    assert hull.source == "hull" and len(hull) > 2 * len(data)  # zero cells between the data filled in
    assert np.isin(data, hull.cells).all()
    res = gistar(data, np.ones(len(data)), None)
    assert res.domain["source"] == "hull" and len(res.cells) == len(hull)
    square = shapely.box(lon - 0.02, lat - 0.01, lon + 0.02, lat + 0.01)
    poly = domain_from_polygon(shapely.to_wkb(square), 9)
    assert poly.source == "polygon" and len(poly) > 50
    out = gistar(np.array([h3.str_to_int(h3.latlng_to_cell(lat + 1, lon, 9))], dtype=np.uint64), [5.0], poly)
    assert out.dropped_outside_domain == 1
