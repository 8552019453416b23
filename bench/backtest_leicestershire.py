"""The forecast benchmark and the backtest report: rolling-origin backtests on the shared police.uk files.

    .venv/bin/python bench/backtest_leicestershire.py [--quick] [--weights cchi|open]

One command, every figure measured in the same run:

* Leicestershire (2019-12 .. 2022-10, 35 months): every method at H3 resolution 9 (the report's full table,
  incl. KDE at 200/400/800 m), the baselines and ``forecast`` at resolutions 10 and 11; 12-month training
  windows for the baselines, all prior months for the forecast; again with the baselines on all prior months
  (``expanding``) so the forecast's gain is not only "more history"; and a diagnostic ceiling (a ranking that
  peeks at the months around the test month).
* Essex (2024-01 .. 2024-04, 4 months): at resolutions 9, 10 and 11 with 1-month training and expanding
  baselines (3 origins: intervals flagged unreliable).

Writes docs/backtest-leicestershire.md (+ the capture PNG), docs/benchmarks-forecast.md (the benchmark entry,
with the goal of issue 12 checked row by row) and geodata/defaults/forecast_skill.json (the skill the forecast
response quotes). ``--quick``: resolution 9 and 10 only, no KDE variants (a smoke run; writes nothing).
``--reports-only``: rewrite the three outputs from the last full run's saved results (bench/out/), no recompute.
``--resume``: each finished run is checkpointed as it ends; resume a stopped run from there.
"""
from __future__ import annotations

import argparse
import json
import pickle
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import shapely

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import machine  # noqa: E402
from geodata.harm import load_open_default, load_weights_file  # noqa: E402
from geodata.ingest import parse_files  # noqa: E402
from hotspots.stats.backtest import (BASELINES, BacktestConfig, BacktestResult, ratio_to_best, run_backtest,  # noqa: E402
                                     select_and_score)
from hotspots.stats.gistar import Domain, domain_from_polygon  # noqa: E402
from hotspots.stats.timeslices import cube, make_slices  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
FORCES = {
    "Leicestershire": (DATA / "crime" / "leicestershire_street_2019-12_to_2022-10.csv.gz",
                       DATA / "boundaries" / "leicestershire_lsoa2011.geojson"),
    "Essex": (DATA / "crime" / "essex_street_2024-01_to_2024-04.csv.gz",
              DATA / "boundaries" / "essex_lsoa2011.geojson"),
}
CCHI = DATA / "harm_weights" / "cchi_2020_values.csv"
COVERAGES = (0.01, 0.02, 0.05)
SAVED = ROOT / "bench" / "out" / "forecast_runs.pkl"
PARTIAL = ROOT / "bench" / "out" / "forecast_runs.partial.pkl"  # checkpoint of a run in progress (--resume)
GOAL = {9: 1.025, 10: 1.06}  # issue 12: harm-PAI@2 % ratio to the best baseline; never below 1.0 at 1/2/5 %
FULL_METHODS = ("harm_spots", "prior_counts", "prior_period_harm", "gistar", "kde", "kde_200m", "kde_800m",
                "prospective", "forecast")
METHODS = (*BASELINES, "forecast")


@dataclass
class Run:
    force: str
    resolution: int
    label: str  # "12-month baselines" / "expanding baselines"
    result: BacktestResult
    ratios: pd.DataFrame
    seconds: float


def load_force(name: str, weights: str):
    crime, lsoa = FORCES[name]
    rows = parse_files([(str(crime), None)]).rows
    table = load_weights_file(CCHI) if weights == "cchi" else load_open_default()
    days, exact = table.weigh(rows.ho_code, rows.offence_group, rows.category)
    feats = json.loads(lsoa.read_text())["features"]
    force = shapely.make_valid(shapely.union_all([shapely.make_valid(shapely.geometry.shape(f["geometry"]))
                                                  for f in feats]))
    return rows.assign(harm=days), table, float(np.mean(exact)) if len(exact) else 0.0, force, len(feats)


def run_one(rows, force_poly, n_lsoa: int, force: str, res: int, cfg: BacktestConfig, label: str) -> Run:
    domain = domain_from_polygon(shapely.to_wkb(force_poly), res, f"{force} force area (union of {n_lsoa} 2011 LSOAs)")
    ev = rows.assign(cell=rows[f"h3_{res}"])
    t = time.perf_counter()
    res_ = run_backtest(ev, domain, cfg)
    secs = time.perf_counter() - t
    ratios = ratio_to_best(res_.per_origin, "forecast", "harm_pai", n_boot=cfg.bootstrap, seed=cfg.seed)
    print(f"  {force} res {res} ({label}): {secs:.1f} s\n" + _ratio_lines(ratios), file=sys.stderr)
    return Run(force, res, label, res_, ratios, secs)


def _ratio_lines(r: pd.DataFrame) -> str:
    return "\n".join(f"    {c:.0%}: {x:.4f} [{lo:.4f}, {hi:.4f}] vs {b}" for c, x, lo, hi, b in
                     zip(r.coverage, r.ratio, r.ratio_lo, r.ratio_hi, r.best_baseline))


def peek_ceiling(rows, domain: Domain, first_origin: int, half_life: float = 3.0, seed: int = 0) -> pd.DataFrame:
    """Diagnostic, not a method: rank by harm and all records in the months AROUND the test month (symmetric
    decay, the test month itself left out) - a ranking that may look at the future. It shows how much a
    stationary per-cell rate could gain over the baselines on this file."""
    from geodata.cells import cell_area_km2

    idx, inside = domain.index_of(rows[f"h3_{domain.resolution}"].to_numpy(np.uint64))
    ev = rows.loc[inside]
    sl = make_slices(ev["occurred_from"], ev["precision"])
    s_idx = sl.assign(ev["occurred_from"])
    n, S = len(domain), len(sl)
    harm = cube(idx[inside], s_idx, n, S, ev["harm"].to_numpy(float))
    recs = cube(idx[inside], s_idx, n, S)
    area = cell_area_km2(domain.cells)
    tb = np.random.default_rng(seed).permutation(n)
    from scipy.stats import rankdata

    out = []
    for s in range(first_origin, S):
        w = 0.5 ** (np.abs(np.arange(S) - s) / half_life)
        w[s] = 0.0
        score = rankdata(harm @ w) + rankdata(recs @ w)
        best_c = np.cumsum(np.sort(recs[:, s])[::-1])
        best_h = np.cumsum(np.sort(harm[:, s])[::-1])
        for r in select_and_score(score, area, tb, recs[:, s], harm[:, s], COVERAGES, best_c, best_h):
            out.append({"origin": sl.labels()[s], "method": "peek", **r})
    return pd.DataFrame(out)


def peek_ratios(rows, domain: Domain, run: Run) -> pd.DataFrame:
    """The peeking ranking against the best baseline of ``run`` (same origins, same cells)."""
    po = pd.concat([peek_ceiling(rows, domain, 12), run.result.per_origin], ignore_index=True)
    return ratio_to_best(po[po.method.isin(["peek", *BASELINES])], "peek", "harm_pai", baselines=BASELINES)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", choices=["cchi", "open"], default="cchi")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", type=Path, default=ROOT / "docs")
    ap.add_argument("--reports-only", action="store_true",
                    help="rewrite the reports from the last run's saved results (bench/out/forecast_runs.pkl)")
    ap.add_argument("--resume", action="store_true",
                    help="skip the runs a stopped run already finished (bench/out/forecast_runs.partial.pkl)")
    args = ap.parse_args()
    if args.reports_only:
        with SAVED.open("rb") as f:
            saved = pickle.load(f)
        write_reports(args.out, **saved)
        return
    started = datetime.now(timezone.utc)
    # every finished run is checkpointed, so a run stopped half-way is resumed (--resume) instead of recomputed
    done: dict = {}
    resumed = None
    if args.resume and PARTIAL.exists() and not args.quick:
        with PARTIAL.open("rb") as f:
            done = pickle.load(f)
        if done.get("weights") != args.weights:  # a checkpoint of another weights table is not this run
            sys.exit(f"{PARTIAL} was made with --weights {done.get('weights')}; rerun without --resume")
        started = done.get("started", started)
        kept = [k for k in done if isinstance(k, tuple)]
        print(f"resuming: {len(kept)} run(s) already done", file=sys.stderr)
        resumed = (f"stopped after {len(kept)} run(s) ({', '.join(' '.join(map(str, k)) for k in kept)}) and resumed "
                   f"with --resume at {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC: those were kept from the "
                   "checkpoint, the rest computed then")
    done["started"], done["weights"] = started, args.weights

    def once(key: tuple, compute):
        if key not in done:
            done[key] = compute()
            if args.quick:  # a smoke run keeps nothing
                return done[key]
            PARTIAL.parent.mkdir(parents=True, exist_ok=True)
            with PARTIAL.open("wb") as f:
                pickle.dump(done, f)
        return done[key]

    runs: list[Run] = []
    resolutions = (9, 10) if args.quick else (9, 10, 11)

    t0 = time.perf_counter()
    rows, table, share_exact, poly, n_lsoa = load_force("Leicestershire", args.weights)
    t_ingest = time.perf_counter() - t0
    full = None
    peeks = {}
    for res in resolutions:
        methods = FULL_METHODS if res == 9 and not args.quick else METHODS
        run = once(("Leicestershire", res, "12-month baselines"),
                   lambda: run_one(rows, poly, n_lsoa, "Leicestershire", res, BacktestConfig(methods=methods),
                                   "12-month baselines"))
        runs.append(run)
        full = full or run
        if res in (9, 10):
            runs.append(once(("Leicestershire", res, "expanding baselines"),
                             lambda: run_one(rows, poly, n_lsoa, "Leicestershire", res,
                                             BacktestConfig(methods=METHODS, expanding=True), "expanding baselines")))
            domain = domain_from_polygon(shapely.to_wkb(poly), res, "Leicestershire force area")
            peeks[res] = once(("peek", res), lambda: peek_ratios(rows, domain, run))
    e_rows, _, _, e_poly, e_lsoa = load_force("Essex", args.weights)
    for res in resolutions:
        runs.append(once(("Essex", res, "essex"),
                         lambda: run_one(e_rows, e_poly, e_lsoa, "Essex", res,
                                         BacktestConfig(methods=METHODS, train_slices=1, expanding=True),
                                         "1-month training, expanding baselines")))
    if args.quick:
        return
    saved = dict(runs=runs, full=full, peeks=peeks, weights=table.name, share_exact=share_exact, t_ingest=t_ingest,
                 started=started, n_rows=len(rows), resumed=resumed)
    SAVED.parent.mkdir(parents=True, exist_ok=True)
    with SAVED.open("wb") as f:  # the measured results, so the reports can be rewritten without re-running
        pickle.dump(saved, f)
    PARTIAL.unlink(missing_ok=True)
    write_reports(args.out, **saved)


def _fmt_ratio(r) -> str:
    return f"{r.ratio:.3f} [{r.ratio_lo:.3f}, {r.ratio_hi:.3f}]"


def goal_rows(runs: list[Run]) -> list[str]:
    lines = ["| force | res | baselines | origins | harm-PAI ratio @1 % | @2 % | @5 % | best baseline @2 % | goal |",
             "|---|---:|---|---:|---|---|---|---|---|"]
    for run in runs:
        r = run.ratios.set_index("coverage")
        two = r.loc[0.02]
        floor_ok = bool((r["ratio"] >= 1.0).all())
        target = GOAL.get(run.resolution)
        if target is None:
            goal = "never below 1.0: " + ("met" if floor_ok else "NOT met")
        else:
            goal = (f">= {target}x @2 %: {'met' if two.ratio >= target else 'NOT met'}; never below 1.0: "
                    f"{'met' if floor_ok else 'NOT met'}")
        rel = "" if bool(two.interval_reliable) else " (unreliable)"
        lines.append(f"| {run.force} | {run.resolution} | {run.label} | {int(two.n_origins)}{rel} | "
                     f"{_fmt_ratio(r.loc[0.01])} | {_fmt_ratio(two)} | {_fmt_ratio(r.loc[0.05])} | "
                     f"{two.best_baseline} | {goal} |")
    return lines


def _at(runs: list[Run], force: str, res: int, label: str, cov: float = 0.02):
    for run in runs:
        if run.force == force and run.resolution == res and run.label == label:
            return run.ratios.set_index("coverage").loc[cov]
    return None


def reading(runs: list[Run], peeks: dict) -> str:
    """The first bullets of 'Reading it', from this run's figures (so the prose cannot drift from the tables)."""
    lines = []
    base = "12-month baselines"
    r = {res: _at(runs, "Leicestershire", res, base) for res in (9, 10, 11)}
    below = [f"res {run.resolution} at {c:.0%}: {x.ratio:.3f} [{x.ratio_lo:.3f}, {x.ratio_hi:.3f}] vs {x.best_baseline}"
             for run in runs if run.force == "Leicestershire" and run.label == base
             for c, x in run.ratios.set_index("coverage").iterrows() if x.ratio < 1.0]
    parts = ", ".join(f"{(x.ratio - 1) * 100:+.1f} % at res {res}" for res, x in r.items() if x is not None)
    reached = all(r.get(res) is not None and r[res].ratio >= goal for res, goal in GOAL.items()) and not below
    lines.append(
        "- `forecast` ranks by expected harm next month: decayed harm over every prior month (half-life 6 months) "
        "shrunk half-way towards the decayed count of all records (every crime type and ASB) times the force's harm "
        f"per record. At 2 % of the area it is {parts} against the best baseline; "
        + ("it is at or above the best baseline at every coverage and resolution here. " if not below else
           f"it falls below the best baseline at {'; '.join(below)}. ")
        + f"Issue 12's goal (+2.5 % at res 9, +6 % at res 10, never below 1.0) is {'' if reached else 'not '}reached.")
    pk = {res: p.set_index("coverage").loc[0.02] for res, p in peeks.items()}
    if pk:
        lines.append(
            "- The peeking diagnostic shows how little room the file leaves: a ranking that sees the months around the "
            "test month reaches only " + ", ".join(f"{(x.ratio - 1) * 100:+.1f} % at res {res}" for res, x in pk.items())
            + " at 2 %. police.uk's snapped locations make the same few thousand points carry the harm month after "
            "month, so the 12-month count is already close to their long-run rate; what is left is mostly the "
            "Poisson noise of the test month itself, which no ranking can predict.")
    ex = {res: _at(runs, "Leicestershire", res, "expanding baselines") for res in (9, 10)}
    if all(x is not None for x in ex.values()):
        lines.append(
            "- With the baselines also given every prior month (expanding) the margin at 2 % is "
            + ", ".join(f"{(x.ratio - 1) * 100:+.1f} % [{(x.ratio_lo - 1) * 100:+.1f}, {(x.ratio_hi - 1) * 100:+.1f}] at "
                        f"res {res}" for res, x in ex.items())
            + ": part of the gain over the 12-month baselines is simply the longer history the forecast uses. At "
            "res 11 nearly every cell with a record in the last 12 months fits inside 2 % of the area, so the gain "
            "there comes from ranking cells with older records above cells with none.")
    return "\n".join(lines)


def write_reports(out: Path, runs: list[Run], full: Run, peeks: dict, weights: str, share_exact: float,
                  t_ingest: float, started: datetime, n_rows: int, resumed: str | None = None) -> None:
    res9 = full.result
    png = res9.plot_capture(out / "backtest-leicestershire-capture.png",
                            title="Leicestershire police.uk 2019-12..2022-10: harm capture, next month (res 9)")
    origins = sorted(res9.per_origin.origin.unique())
    head = [
        f"- run: {started:%Y-%m-%d %H:%M} UTC; machine: {machine()} (shared with other developers' jobs: timings "
        "vary, ratios do not)" + (f"; {resumed}" if resumed else ""),
        f"- data: `{FORCES['Leicestershire'][0].name}`, {n_rows:,} located rows, precision month only; "
        f"{res9.events_used:,} used at res 9, {res9.events_outside_domain:,} outside the domain",
        f"- harm weights: `{weights}` ({share_exact:.0%} exact by HO code; police.uk rows carry only a category, so "
        "weights are category expectations)",
        f"- domain: {res9.domain['description']}, H3 resolution 9, {res9.domain['cells']:,} cells (filled polygon, "
        "zero cells included)",
        f"- slices: month x 1, {res9.slices['slices']} slices; training window {res9.config['train_slices']} months "
        f"for the baselines, every prior month for `forecast`; test 1 month; {len(origins)} origins "
        f"({origins[0]} .. {origins[-1]})",
        f"- bootstrap: {res9.config['bootstrap']} resamples of origins, 95 % percentile intervals",
        f"- timing: ingest + weights {t_ingest:.1f} s; backtest at res 9 {full.seconds:.1f} s",
    ]
    forecast_rows = []
    for run in runs:
        if run.force != "Leicestershire" or run.label != "12-month baselines":
            continue
        s = run.result.summary
        best = set(run.ratios.best_baseline)
        sub = s[s.method.isin(["forecast", *best])]
        sub_res = BacktestResult(run.result.per_origin, sub, run.result.curves, run.result.config,
                                 run.result.slices, run.result.domain, run.result.events_used,
                                 run.result.events_outside_domain)
        forecast_rows.append(f"### Resolution {run.resolution} ({run.result.domain['cells']:,} cells)\n\n"
                             + sub_res.table(("hit_rate", "pai", "harm_pai", "harm_pei")))
    peek_lines = ["| res | peek @1 % | @2 % | @5 % |", "|---:|---|---|---|"]
    for res, p in peeks.items():
        p = p.set_index("coverage")
        peek_lines.append(f"| {res} | " + " | ".join(_fmt_ratio(p.loc[c]) for c in COVERAGES) + " |")

    cap = res9.curves
    at = {m: cap[(cap.method == m)].set_index("area_share").harm_share for m in cap.method.unique()}
    grid_pts = [0.01, 0.02, 0.05, 0.10, 0.20]
    cap_rows = ["| method | " + " | ".join(f"{g:.0%} area" for g in grid_pts) + " |", "|---|" + "---|" * len(grid_pts)]
    for m, s in at.items():
        vals = [np.interp(g, s.index.to_numpy(), s.to_numpy()) for g in grid_pts]
        cap_rows.append(f"| {m} | " + " | ".join(f"{100 * v:.1f} %" for v in vals) + " |")
    nl = "\n"
    body = f"""# Backtest: Leicestershire police.uk, 2019-12 to 2022-10

Generated by `bench/backtest_leicestershire.py` (one command; the numbers below are exactly what it wrote).
Method and metric definitions: [statistics.md](statistics.md#backtest); the forecast:
[hotspots.md](hotspots.md#forecast).

{nl.join(head)}

## All methods at resolution 9

{res9.table()}

Harm PEI (harm captured / best possible harm for the same cells):

{res9.table(("harm_pei",))}

Metrics are means over origins with 95 % bootstrap intervals (origins resampled). Coverage is the share of the
domain area selected (the top cells by each method's score until the area is reached). PAI = hit rate / area
share; harm PAI = share of next-month harm / area share; PEI = hit rate / the best hit rate possible with the same
number of cells.

## The forecast against the best baseline

Ratio of `forecast`'s mean harm PAI to the best baseline's at each coverage (the baseline with the highest mean
there, among {", ".join(f"`{b}`" for b in BASELINES)}), with a paired bootstrap interval over origins:

{nl.join(goal_rows(runs))}

"expanding baselines": every baseline re-run on all months before each origin (as the forecast sees them), so
the ratio is not just "more history". Essex has 4 months: 3 origins, each trained on 1-3 months, so its intervals
are flagged unreliable and resolution 11 cannot separate methods (every cell with any record fits inside 2 % of
the area, so all methods select the same cells).

### Forecast and best-baseline rows at resolutions 9, 10, 11

{(nl + nl).join(forecast_rows)}

### How much room the data leave

A diagnostic ranking that **peeks at the future** (harm and all records in the months around the test month,
symmetric decay with a 3-month half-life, the test month itself left out) - not a usable method - against the
same best baseline:

{nl.join(peek_lines)}

## Harm-capture curve

![harm capture]({png.name})

Mean share of next-month harm captured by the top cells of each method at resolution 9 ("oracle" = ranking by
the next month's actual harm, the ceiling):

{nl.join(cap_rows)}

## Reading it

{reading(runs, peeks)}
- The training window is 12 months and the test is the next month, so the first origin is 2020-12; the Covid
  lockdown months (2020-11 .. 2021-03) are inside the early training windows and test months.
- police.uk locations are snapped to anonymous points, so next month's offences land on the same few thousand
  points; that favours methods that keep exactly the same cells (harm spots, prior counts, forecast) over
  smoothing (KDE), and a wider KDE bandwidth spreads the selection over cells that cannot receive any offence.
- `harm_spots` and `prior_counts` are close: police.uk rows carry only a category, so each offence's harm is its
  category's expected CCHI value and a harm ranking is a count ranking re-weighted by category mix.
- `prior_period_harm` flattens beyond ~7 % of the area: only cells with harm in the single last month get a
  positive score, the rest are taken in random order.
- Gi* z is a significance measure, not a forecast: it favours cells in dense neighbourhoods over isolated busy
  cells, which costs it hit rate at 1-2 % of the area.
- Intervals resample origins and ignore autocorrelation between consecutive months; treat them as optimistic.

## Caveats

{nl.join('- ' + c for c in res9.caveats)}
"""
    (out / "backtest-leicestershire.md").write_text(body)

    resumed_note = f" ({resumed})" if resumed else ""
    bench = f"""# Forecast vs baselines

- command: `.venv/bin/python bench/backtest_leicestershire.py` (also writes docs/backtest-leicestershire.md)
- date: {started:%Y-%m-%d %H:%M} UTC{resumed_note}; machine: {machine()}; shared with other
  developers' jobs (the ratios are measured against baselines in the same run and do not depend on load)
- what: harm PAI of the top cells covering 1/2/5 % of the force area in the next month, `forecast` / the best
  baseline, mean over rolling monthly origins, paired 95 % bootstrap interval over origins
- goal (issue 12): >= 1.025x at res 9 and >= 1.06x at res 10 at 2 %, never below 1.0 at 1, 2 or 5 %

{nl.join(goal_rows(runs))}

Diagnostic ceiling on Leicestershire (a ranking that peeks at the months around the test month; see
backtest-leicestershire.md): {"; ".join(f"res {r}: {_fmt_ratio(p.set_index('coverage').loc[0.02])} at 2 %" for r, p in peeks.items())}.
"""
    (out / "benchmarks-forecast.md").write_text(bench)

    skill = {"source": f"bench/backtest_leicestershire.py run of {started:%Y-%m-%d} (docs/backtest-leicestershire.md)",
             "data": "Leicestershire police.uk 2019-12..2022-10, CCHI 2020 weights, 12-month baselines, "
                     f"{len(origins)} monthly origins",
             "metric": "harm PAI in the next month, forecast / best baseline, paired 95 % bootstrap interval",
             "by_resolution": {}}
    for run in runs:
        if run.force == "Leicestershire" and run.label == "12-month baselines":
            skill["by_resolution"][str(run.resolution)] = {
                f"coverage_{int(round(c * 100))}pct": {"ratio": round(x, 4), "interval": [round(lo, 4), round(hi, 4)],
                                                      "best_baseline": b}
                for c, x, lo, hi, b in zip(run.ratios.coverage, run.ratios.ratio, run.ratios.ratio_lo,
                                           run.ratios.ratio_hi, run.ratios.best_baseline)}
    (ROOT / "geodata" / "defaults" / "forecast_skill.json").write_text(json.dumps(skill, indent=1) + "\n")
    print(bench)


if __name__ == "__main__":
    main()
