"""Rolling-origin backtest on the Leicestershire police.uk file (2019-12 .. 2022-10, month precision).

    .venv/bin/python bench/backtest_leicestershire.py [--resolution 9] [--weights cchi|open]

Prints the results and writes docs/backtest-leicestershire.md and docs/backtest-leicestershire-capture.png.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import shapely

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from geodata.harm import load_open_default, load_weights_file  # noqa: E402
from geodata.ingest import parse_files  # noqa: E402
from hotspots.stats.backtest import BacktestConfig, run_backtest  # noqa: E402
from hotspots.stats.gistar import domain_from_polygon  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
CRIME = DATA / "crime" / "leicestershire_street_2019-12_to_2022-10.csv.gz"
LSOA = DATA / "boundaries" / "leicestershire_lsoa2011.geojson"
CCHI = DATA / "harm_weights" / "cchi_2020_values.csv"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--resolution", type=int, default=9)
    ap.add_argument("--weights", choices=["cchi", "open"], default="cchi")
    ap.add_argument("--out", type=Path, default=ROOT / "docs")
    args = ap.parse_args()

    t0 = time.perf_counter()
    rows = parse_files([(str(CRIME), None)]).rows
    table = load_weights_file(CCHI) if args.weights == "cchi" else load_open_default()
    days, exact = table.weigh(rows.ho_code, rows.offence_group, rows.category)
    rows = rows.assign(harm=days, cell=rows[f"h3_{args.resolution}"])
    t_ingest = time.perf_counter() - t0

    feats = json.loads(LSOA.read_text())["features"]
    geoms = [shapely.make_valid(shapely.geometry.shape(f["geometry"])) for f in feats]
    force = shapely.make_valid(shapely.union_all(geoms))
    domain = domain_from_polygon(shapely.to_wkb(force), args.resolution,
                                 "Leicestershire force area (union of 611 2011 LSOAs)")

    cfg = BacktestConfig(methods=("harm_spots", "prior_counts", "prior_period_harm", "gistar", "kde", "kde_200m",
                                  "kde_800m", "prospective"))
    last = [-1]

    def progress(done: int, total: int, msg: str) -> None:
        if done != last[0]:
            print(f"  [{done}/{total}] {msg}", file=sys.stderr)
            last[0] = done

    t1 = time.perf_counter()
    res = run_backtest(rows, domain, cfg, progress=progress)
    t_run = time.perf_counter() - t1
    png = res.plot_capture(args.out / "backtest-leicestershire-capture.png",
                           title="Leicestershire police.uk 2019-12..2022-10: harm capture, next month")

    n_origins = res.per_origin.origin.nunique()
    origins = sorted(res.per_origin.origin.unique())
    table_md = res.table()
    pei_md = res.table(("harm_pei",))
    share_exact = float(np.mean(exact)) if len(exact) else 0.0
    header = [
        f"- run: {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC} on {platform.node()} "
        f"({platform.processor() or platform.machine()}, Python {platform.python_version()})",
        f"- data: `{CRIME.name}`, {len(rows):,} located rows, precision month only; "
        f"{res.events_used:,} used, {res.events_outside_domain:,} outside the domain",
        f"- harm weights: `{table.name}` ({share_exact:.0%} exact by HO code; police.uk rows carry only a "
        "category, so weights are category expectations)",
        f"- domain: {res.domain['description']}, H3 resolution {args.resolution}, {res.domain['cells']:,} cells "
        f"(filled polygon, zero cells included)",
        f"- slices: {res.slices['unit']} x {res.slices['length']}, {res.slices['slices']} slices; training window "
        f"{cfg.train_slices} months, test {cfg.test_slices} month; {n_origins} origins ({origins[0]} .. {origins[-1]})",
        f"- bootstrap: {cfg.bootstrap} resamples of origins, 95 % percentile intervals",
        f"- timing: ingest + weights {t_ingest:.1f} s, backtest {t_run:.1f} s",
    ]
    text = "\n".join(header) + "\n\n" + table_md + "\n\nHarm PEI (harm captured / best possible harm for the same " \
        "cells):\n\n" + pei_md
    print(text)
    write_doc(args.out / "backtest-leicestershire.md", text, png.name, res)


def write_doc(path: Path, text: str, png_name: str, res) -> None:
    cap = res.curves
    at = {m: cap[(cap.method == m)].set_index("area_share").harm_share for m in cap.method.unique()}
    grid_pts = [0.01, 0.02, 0.05, 0.10, 0.20]
    rows = ["| method | " + " | ".join(f"{g:.0%} area" for g in grid_pts) + " |",
            "|---|" + "---|" * len(grid_pts)]
    for m, s in at.items():
        vals = [np.interp(g, s.index.to_numpy(), s.to_numpy()) for g in grid_pts]
        rows.append(f"| {m} | " + " | ".join(f"{100 * v:.1f} %" for v in vals) + " |")
    body = f"""# Backtest: Leicestershire police.uk, 2019-12 to 2022-10

Generated by `bench/backtest_leicestershire.py` (the numbers below are exactly what it printed). Method and
metric definitions: [statistics.md](statistics.md#backtest).

{text}

Metrics are means over origins with 95 % bootstrap intervals (origins resampled). Coverage is the share of the
domain area selected (the top cells by each method's score until the area is reached). PAI = hit rate / area
share; harm PAI = share of next-month harm / area share; PEI = hit rate / the best hit rate possible with the same
number of cells.

## Harm-capture curve

![harm capture]({png_name})

Mean share of next-month harm captured by the top cells of each method ("oracle" = ranking by the next month's
actual harm, the ceiling):

{chr(10).join(rows)}

## Reading it

- The training window is 12 months and the test is the next month, so the first origin is 2020-12; the Covid
  lockdown months (2020-11 .. 2021-03) are inside the early training windows and test months.
- police.uk locations are snapped to anonymous points, so next month's offences land on the same few thousand
  points; that favours methods that keep exactly the same cells (harm spots, prior counts) over smoothing (KDE),
  and a wider KDE bandwidth spreads the selection over cells that cannot receive any offence.
- `harm_spots` and `prior_counts` are close: police.uk rows carry only a category, so each offence's harm is its
  category's expected CCHI value and a harm ranking is a count ranking re-weighted by category mix. Exact Home
  Office codes (force extracts) are where harm and count rankings can part.
- `prior_period_harm` flattens beyond ~7 % of the area: only cells with harm in the single last month get a
  positive score, the rest are taken in random order.
- Gi* z is a significance measure, not a forecast: it favours cells in dense neighbourhoods over isolated busy
  cells, which costs it hit rate at 1-2 % of the area.
- Harm is dominated by rare serious offences (category expectations here, since police.uk has no Home Office
  code): harm PAI moves more between months than count PAI, and its intervals are wider.
- Intervals resample origins and ignore autocorrelation between consecutive months; treat them as optimistic.

## Caveats

{chr(10).join('- ' + c for c in res.caveats)}
"""
    path.write_text(body)


if __name__ == "__main__":
    main()
