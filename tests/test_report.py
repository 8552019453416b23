"""The harm-trend scrutiny report: a hand-checked quarter total on the Leicestershire file (2020 Q1 - 2022 Q3),
a planted change called beyond chance while a stable series is not, and the statistics cross-checked against
independent implementations (compound-Poisson variance, exact Poisson intervals, statsmodels, calibration)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from geodata.harm import load_open_default
from geodata.ingest import parse_files
from hotspots.patrol import harmtrend as ht
from hotspots.ranking.query import HotspotQuery
from patrol_data import LEICS, LEICS_CRIME, leics_store

QUARTERS = [f"{y} Q{q}" for y in (2020, 2021, 2022) for q in (1, 2, 3, 4)][:11]  # 2020 Q1 .. 2022 Q3


@pytest.fixture(scope="module")
def leics(tmp_path_factory):
    store = leics_store(tmp_path_factory, "report")
    yield store
    store.close()


@pytest.fixture(scope="module")
def raw():
    """The raw file as data.police.uk ships it, reduced the way the ingest reduces it (located rows; a Crime ID
    republished in a later month counts once, in its first month)."""
    frame = pd.read_csv(LEICS_CRIME, dtype=str, keep_default_na=False)
    dup = (frame["Crime ID"] != "") & frame["Crime ID"].duplicated()
    return frame[~dup & (frame["Longitude"] != "") & (frame["Latitude"] != "")]


def test_leicestershire_quarters_and_a_hand_checked_total(leics, raw):
    w = load_open_default()
    rep = ht.harm_trend(leics, HotspotQuery(dataset=LEICS, preset="all-crime"), w, "quarter", "districts")
    assert rep.meta["periods"] == QUARTERS
    assert rep.meta["partial_periods_left_out"] == ["2019 Q4", "2022 Q4"]  # Dec 2019 only; Oct 2022 only
    row = rep.rows[(rep.rows["area_id"] == ht.ALL_ID) & (rep.rows["period"] == "2021 Q2")].iloc[0]
    # by hand: 2021-04..06, no ASB, counts per category x the open table's days (geodata/defaults)
    by_hand = (10_053 * 92.6 + 3_335 * 5 + 2_517 * 11.18 + 1_724 * 2 + 1_160 * 5 + 958 * 182.29 + 815 * 120
               + 726 * 1 + 583 * 5 + 451 * 2 + 200 * 10 + 152 * 2 + 150 * 365)
    assert by_hand == pytest.approx(1_319_001.68)
    assert row["count"] == 22_824 and row["harm"] == pytest.approx(by_hand, abs=0.01)
    # and independently from the raw file with pandas
    q2 = raw[raw["Month"].isin(["2021-04", "2021-05", "2021-06"]) & (raw["Crime type"] != "Anti-social behaviour")]
    assert len(q2) == 22_824 and q2["Crime type"].map(w.by_category).sum() == pytest.approx(row["harm"], abs=0.01)
    assert row["n_violence_and_sexual_offences"] == 10_053 and row["days"] == 91
    # the comparisons point at the right periods and say so
    assert row["prev_period"] == "2021 Q1" and row["yoy_period"] == "2020 Q2"
    q1 = rep.rows[(rep.rows["area_id"] == ht.ALL_ID) & (rep.rows["period"] == "2021 Q1")].iloc[0]
    assert row["harm_prev"] == pytest.approx(q1["harm"])
    assert row["harm_prev_change_pct"] == pytest.approx(100 * (row["harm"] / q1["harm"] - 1))
    # areas add up to the whole (plus records outside every district)
    areas = rep.rows[(rep.rows["area_id"] != ht.ALL_ID) & (rep.rows["period"] == "2021 Q2")]
    assert len(areas) == 9
    outside = rep.meta["records_outside_areas"]
    assert areas["count"].sum() <= row["count"] and outside >= 0
    assert rep.rows[rep.rows["area_id"] != ht.ALL_ID]["count"].sum() + outside == rep.rows[
        rep.rows["area_id"] == ht.ALL_ID]["count"].sum()
    assert "Poisson bootstrap" in rep.meta["method"]["harm"] and "exact conditional" in rep.meta["method"]["count"]
    text = ht.narrative(row, "quarter", rep.types)
    assert text.startswith("The combined harm score for All areas in 2021 Q2 was 1,319,002, compared to")


def test_month_report_on_leicestershire(leics):
    rep = ht.harm_trend(leics, HotspotQuery(dataset=LEICS, preset="all-crime"), load_open_default(), "month", None)
    assert rep.meta["periods"][0] == "2019-12" and rep.meta["periods"][-1] == "2022-10"
    assert len(rep.meta["periods"]) == 35 and rep.meta["partial_periods_left_out"] == []
    assert set(rep.rows["area_id"]) == {ht.ALL_ID}
    feb = rep.rows[rep.rows["period"] == "2021-02"].iloc[0]
    assert feb["days"] == 28 and feb["yoy_period"] == "2020-02"
    with pytest.raises(ht.ReportError, match="by must be"):
        ht.harm_trend(leics, HotspotQuery(dataset=LEICS), load_open_default(), "week")
    with pytest.raises(ht.ReportError, match="no area layer"):
        ht.harm_trend(leics, HotspotQuery(dataset=LEICS), load_open_default(), "quarter", "parishes")


# ------------------------------------------------------------------------------------------ planted change
def _stable_series(raw: pd.DataFrame) -> pd.DataFrame:
    """The 2021 Q3 records of the Leicestershire file copied into every month 2020-01 .. 2022-09, thinned (or
    topped up) in proportion to the month's days: the same places, offences and rate per day in every period."""
    base = {i: raw[raw["Month"] == m].reset_index(drop=True) for i, m in enumerate(["2021-07", "2021-08", "2021-09"])}
    base_days = {0: 31, 1: 31, 2: 30}
    rng = np.random.default_rng(0)
    perm = {i: rng.permutation(len(b)) for i, b in base.items()}
    parts = []
    for month in [str(p) for p in pd.period_range("2020-01", "2022-09", freq="M")]:
        pos = (int(month[5:]) - 1) % 3
        k = int(round(len(base[pos]) * pd.Period(month).days_in_month / base_days[pos]))
        rows = base[pos].iloc[np.resize(perm[pos], k)].copy()
        copy = (np.arange(k) // len(base[pos])).astype(str)
        rows["Crime ID"] = rows["Crime ID"] + "-" + month + "-" + copy
        rows["Month"] = month
        parts.append(rows)
    return pd.concat(parts, ignore_index=True)


@pytest.mark.slow
def test_planted_change_is_beyond_chance_and_a_stable_series_is_not(leics, raw):
    stable = _stable_series(raw[raw["Crime ID"] != ""])
    leicester_violence = stable[stable["Month"].isin(["2022-04", "2022-05", "2022-06"])
                                & stable["LSOA name"].str.startswith("Leicester ")
                                & (stable["Crime type"] == "Violence and sexual offences")]
    extra = leicester_violence.sample(frac=0.15, random_state=1).assign(
        **{"Crime ID": lambda d: d["Crime ID"] + "-planted"})  # +15 % violence in Leicester, 2022 Q2
    planted = pd.concat([stable, extra], ignore_index=True)
    for name, frame in (("stable", stable), ("planted", planted)):
        leics.ingest(name, parse_files([(f"{name}.csv", frame.to_csv(index=False).encode())]))
    w = load_open_default()
    flags = ["harm_prev_beyond_chance", "harm_yoy_beyond_chance", "count_prev_beyond_chance",
             "count_yoy_beyond_chance"]

    def flagged(rep) -> set[tuple[str, str, str]]:
        r = rep.rows
        return {(p, a, f) for f in flags for p, a in zip(r.loc[r[f].eq(True), "period"], r.loc[r[f].eq(True), "area_name"])}

    calm = ht.harm_trend(leics, HotspotQuery(dataset="stable", preset="all-crime"), w)
    assert calm.meta["periods"] == QUARTERS and calm.meta["tests_made"] > 300
    assert flagged(calm) == set()  # 340 comparisons of a stable series: none beyond chance
    rep = ht.harm_trend(leics, HotspotQuery(dataset="planted", preset="all-crime"), w)
    got = flagged(rep)
    leicester = {f for f in got if f[1] == "Leicester"}
    assert leicester == {("2022 Q2", "Leicester", f) for f in flags} | {
        ("2022 Q3", "Leicester", "harm_prev_beyond_chance"), ("2022 Q3", "Leicester", "count_prev_beyond_chance")}
    assert {f[1] for f in got} <= {"Leicester", ht.ALL_NAME}  # no other district flagged
    row = rep.rows[(rep.rows["area_name"] == "Leicester") & (rep.rows["period"] == "2022 Q2")].iloc[0]
    assert row["harm_prev_rr_low"] > 1 and 8 < row["harm_prev_change_pct"] < 16


# ------------------------------------------------------------------------------------------ the statistics
def test_poisson_bootstrap_has_the_compound_poisson_variance():
    """Var(sum_k w_k Poisson(n_k)) = sum_k n_k w_k^2: the replicate totals reproduce it (and the mean)."""
    w = np.array([1.0, 10.0, 92.6, 365.0, 5475.0])
    n = np.array([400, 120, 300, 12, 1])
    t = ht.poisson_bootstrap_totals(np.zeros(5, dtype=int), w, n, 1, reps=40_000, seed=3)[0].astype(float)
    assert t.mean() == pytest.approx((w * n).sum(), rel=0.01)
    assert t.var() == pytest.approx((n * w ** 2).sum(), rel=0.03)


def test_harm_test_is_the_exact_poisson_test_for_one_weight():
    """With a single offence type harm is w x count: the conditional randomisation test must give the exact
    conditional Poisson test's p (up to Monte Carlo error), at small counts too."""
    for c1, c0, d1, d0 in [(60, 40, 91.0, 91.0), (48, 30, 92.0, 90.0), (150, 160, 91.0, 90.0), (7, 1, 31.0, 28.0)]:
        p = ht.conditional_harm_test(np.array([0]), np.array([92.6]), np.array([c1]), np.array([c0]),
                                     np.array([d1 / (d1 + d0)]), 1, reps=40_000, seed=4)[0]
        exact = ht.count_test(np.array([c1]), np.array([d1]), np.array([c0]), np.array([d0]))[0]
        assert p == pytest.approx(exact, abs=0.006), (c1, c0, p, exact)


def test_bootstrap_interval_matches_the_exact_interval_when_counts_are_large():
    """The Poisson-bootstrap interval of the rate ratio against the exact conditional interval (Clopper-Pearson on
    c1 | c1 + c0, scipy, mapped to a ratio): equal within 3 % at hundreds of records; at 60 vs 40 it is too narrow
    at the bottom, which is why the beyond-chance call uses the conditional test, not this interval."""
    from scipy.stats import binomtest

    def both(c1, c0):
        g = np.array([0, 1])
        reps = ht.poisson_bootstrap_totals(g, np.array([10.0, 10.0]), np.array([c1, c0]), 2, reps=20_000, seed=1)
        lo, hi, _ = ht.ratio_interval(reps[[0]], np.array([91.0]), reps[[1]], np.array([90.0]))
        ci = binomtest(c1, c1 + c0).proportion_ci(confidence_level=0.95, method="exact")
        return lo[0], hi[0], (ci.low / (1 - ci.low)) * 90 / 91, (ci.high / (1 - ci.high)) * 90 / 91

    lo, hi, elo, ehi = both(60, 40)
    assert lo > elo + 0.02 and lo > 1 > elo  # the bootstrap alone would call 60 vs 40 a change; it is not
    for c1, c0 in [(480, 400), (150, 160), (1200, 1100)]:
        lo, hi, elo, ehi = both(c1, c0)
        assert lo == pytest.approx(elo, rel=0.03) and hi == pytest.approx(ehi, rel=0.03), (c1, c0)


def test_count_test_agrees_with_statsmodels():
    from statsmodels.stats.rates import test_poisson_2indep

    rng = np.random.default_rng(5)
    c1, c0 = rng.integers(0, 400, 300), rng.integers(0, 400, 300)
    d1, d0 = rng.choice([90.0, 91.0, 92.0], 300), rng.choice([90.0, 91.0, 92.0], 300)
    ours = ht.count_test(c1, d1, c0, d0)
    theirs = np.array([test_poisson_2indep(int(a), da, int(b), db, method="exact-cond").pvalue
                       if a + b else np.nan for a, da, b, db in zip(c1, d1, c0, d0)])
    ok = ~np.isnan(theirs)
    # doubling the smaller tail (ours) vs summing the less likely outcomes (statsmodels' minlike): the same
    # decision at 5 % except within a whisker of the threshold, and equal for equal exposures
    agree = (ours[ok] < 0.05) == (theirs[ok] < 0.05)
    assert agree.mean() > 0.97 and np.all(np.abs(ours[ok] - theirs[ok])[~agree] < 0.02)
    same = (d1 == d0) & ok
    assert np.allclose(ours[same], theirs[same], atol=1e-9)


def test_calibrated_on_heavy_tailed_stable_series():
    """400 pairs of periods drawn from the same compound Poisson process with CCHI-like weights (1 day to 15
    years, a homicide every other period): the harm test calls about 5 % of them beyond chance - neither blind
    nor trigger-happy; a 20 % rise in the common offences is found in force-sized periods."""
    rng = np.random.default_rng(11)
    w = np.array([1.0, 5.0, 10.0, 92.6, 365.0, 1825.0, 5475.0])
    lam = np.array([600, 300, 200, 400, 20, 3, 0.5])
    pairs = 400

    def calls(uplift: np.ndarray, scale: float = 1.0) -> float:
        n1 = rng.poisson(scale * lam * uplift, size=(pairs, len(w)))
        n0 = rng.poisson(scale * lam, size=(pairs, len(w)))
        pair = np.repeat(np.arange(pairs), len(w))
        p = ht.conditional_harm_test(pair, np.tile(w, pairs), n1.ravel(), n0.ravel(), np.full(pairs * len(w), 0.5),
                                     pairs, reps=1000, seed=2)
        return float((p < 0.05).mean())

    assert 0.02 <= calls(np.ones(len(w))) <= 0.08
    rise = np.array([1.2, 1.2, 1.2, 1.2, 1, 1, 1])  # +20 % in the four common offence types
    assert calls(rise, scale=10) > 0.8  # force-sized periods: found
    # district-sized periods: the same rise is mostly within chance - rare severe offences (a homicide is 59
    # assaults with injury) carry most of the variance of harm; a plain count test would call it every time
    assert calls(rise) < 0.5


def test_report_door(api):
    """GET /reports/harm-trend on the bundled Essex sample (2024-01..04, month-only)."""
    base = "/reports/harm-trend?dataset=essex-sample&preset=op-ark"
    q = api.get(base).json()
    assert q["periods"] == ["2024 Q1"] and q["partial_periods_left_out"] == ["2024 Q2"]
    assert all(r["prev_period"] is None for r in q["rows"])  # nothing to compare with, said as null
    m = api.get(base + "&by=month&area_layer=wards&types=3").json()
    assert m["periods"] == ["2024-01", "2024-02", "2024-03", "2024-04"] and m["area_layer"] == "wards"
    total = [r for r in m["rows"] if r["area_id"] == "all"]
    assert [r["prev_period"] for r in total] == [None, "2024-01", "2024-02", "2024-03"]
    assert isinstance(total[1]["harm_prev_beyond_chance"], bool) and 0 <= total[1]["harm_prev_p"] <= 1
    assert len(m["main_offence_types"]) == 3
    csv = api.get(base + "&by=month&format=csv")
    assert csv.status_code == 200 and csv.text.startswith("period,period_start,period_end,days,area_id,area_name,harm")
    png = api.get(base + "&by=month&format=png")
    assert png.headers["content-type"] == "image/png" and png.content[:4] == b"\x89PNG"
    page = api.get(base + "&by=month&format=html")
    assert page.status_code == 200 and "data:image/png;base64," in page.text
    assert "The combined harm score for All areas in 2024-04 was" in page.text
    assert "<script" not in page.text and "src=\"http" not in page.text  # prints offline
    assert page.text.count("<div class=\"marking\">OFFICIAL</div>") == 2  # protective marking, top and bottom
    assert api.get(base + "&by=week").status_code == 422
    assert api.get(base + "&area_layer=parishes").status_code == 422
    assert api.get("/reports/harm-trend?dataset=nope").status_code == 404
    assert api.get(base + "&area_layer=none").json()["area_layer"] is None


def test_report_formats_share_one_report_and_one_chart(api, monkeypatch):
    """json, csv, png and html of one report are one computation and one chart per store state; the page embeds
    the chart format=png serves, and says when it was made (so the page itself is not kept)."""
    import base64

    from hotspots.patrol import harmtrend as ht

    counts = {"report": 0, "chart": 0}
    real_report, real_chart = ht.harm_trend, ht.chart_png

    def report(*a, **k):
        counts["report"] += 1
        return real_report(*a, **k)

    def chart(*a, **k):
        counts["chart"] += 1
        return real_chart(*a, **k)

    monkeypatch.setattr(ht, "harm_trend", report)
    monkeypatch.setattr(ht, "chart_png", chart)
    base = "/reports/harm-trend?dataset=essex-sample&preset=op-ark&types=2"
    got = {f: api.get(f"{base}&format={f}") for f in ("json", "csv", "png", "html")}
    again = api.get(base + "&format=html")
    assert all(r.status_code == 200 for r in got.values()) and again.status_code == 200
    assert counts == {"report": 1, "chart": 1}
    png = base64.b64encode(got["png"].content).decode()
    assert f"data:image/png;base64,{png}" in got["html"].text and png in again.text
    assert len(got["json"].json()["main_offence_types"]) == 2
