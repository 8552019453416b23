"""Real RTM run: Essex violence and sexual offences (police.uk, 2024-01..04) with the shared POI layers.

Run: ``.venv/bin/python -m bench.rtm_real_run`` -- prints markdown and writes docs/rtm-real-run.md verbatim.
Train on 2024-01..03, validate on 2024-04.  Needs ../shared/data beside the repository.
"""
from __future__ import annotations

import argparse
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from geodata.harm import load_open_default  # noqa: E402
from geodata.ingest import StudyArea, parse_files  # noqa: E402
from geodata.layers import load_layer  # noqa: E402
from rtm import RTMConfig, h3_grid, run_rtm, square_grid  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
CATEGORY = "Violence and sexual offences"


def fmt(v, nd=3):
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.{nd}g}" if abs(v) < 1e-3 and v != 0 else f"{v:.{nd}f}"
    return str(v)


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--resolution", type=int, default=10)
    ap.add_argument("--bootstrap", type=int, default=20)
    ap.add_argument("--district", default=None, help="LAD name to restrict the study area (default: all Essex)")
    ap.add_argument("--categories", default=CATEGORY, help="police.uk categories, comma-separated")
    ap.add_argument("--label", default="violent or sexual offences", help="offence noun for narratives")
    ap.add_argument("--outcome", choices=("count", "harm"), default="count")
    ap.add_argument("--compare-count", action="store_true", help="harm outcome: also fit the count model on the "
                    "same offences and report both")
    ap.add_argument("--block-length", type=float, default=None, help="median street-block length (m): distances "
                    "0.5-3 blocks")
    ap.add_argument("--grid", choices=("h3", "square"), default="h3", help="square: cells of half a block")
    ap.add_argument("--out", default=str(ROOT / "docs" / "rtm-real-run.md"))
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    if not DATA.exists():
        sys.exit(f"real data not found at {DATA}")
    t0 = time.perf_counter()
    import geopandas as gpd
    import shapely

    lsoa = gpd.read_file(DATA / "boundaries" / "essex_lsoa2011.geojson")
    if args.district:
        lsoa = lsoa[lsoa["LAD_NAME"] == args.district]
    poly = shapely.make_valid(lsoa.geometry.buffer(0).union_all())
    shapely.prepare(poly)
    area = StudyArea(bbox=tuple(poly.bounds), polygon=poly, name=args.district or "Essex Police area (2011 LSOAs)")
    parsed = parse_files([(DATA / "crime" / "essex_street_2024-01_to_2024-04.csv.gz", None)], area)
    categories = [c.strip() for c in args.categories.split(",")]
    rows = parsed.rows[parsed.rows["category"].isin(categories)].copy()
    wt = load_open_default()
    rows["harm"], exact = wt.weigh(rows["ho_code"], rows["offence_group"], rows["category"])
    poi = DATA / "poi"
    buf = max(RTMConfig(block_length_m=args.block_length).resolved_distances())  # edge effects: the largest distance
    layers = [
        load_layer(poi / "essex_osm_pubs.csv", "osm_pubs", "pub", area=area, licence="ODbL", buffer_m=buf),
        load_layer(poi / "essex_fhrs_pubs_restaurants.csv", "fhrs_pubs", "pub/bar/nightclub", area=area, buffer_m=buf,
                   where={"business_type": "Pub"}, plural="pubs/bars/nightclubs", licence="OGL v3.0"),
        load_layer(poi / "essex_fhrs_pubs_restaurants.csv", "fhrs_restaurants", "restaurant/cafe", area=area, buffer_m=buf,
                   where={"business_type": "Restaurant"}, plural="restaurants/cafes", licence="OGL v3.0"),
        load_layer(poi / "uk_railway_stations.csv", "rail_stations", "railway station", area=area, licence="ODbL", buffer_m=buf),
    ]
    if args.grid == "square":
        if not args.block_length:
            sys.exit("--grid square needs --block-length")
        grid = square_grid(area, median_block_length=args.block_length)
    else:
        grid = h3_grid(area, args.resolution)
    t_prep = time.perf_counter() - t0
    cfg = RTMConfig(test_months=1, bootstrap=args.bootstrap, offence_label=args.label, outcome=args.outcome,
                    block_length_m=args.block_length)
    res = run_rtm(rows, layers, grid, cfg, harm="harm")
    cmp = None
    if args.compare_count and args.outcome == "harm":
        cmp = run_rtm(rows, layers, grid, RTMConfig(test_months=1, bootstrap=0, offence_label=args.label,
                                                    block_length_m=args.block_length), harm="harm")
    invocation = " ".join([".venv/bin/python -m bench.rtm_real_run",
                           shlex.join(sys.argv[1:] if argv is None else argv)]).strip()
    title = f"Essex {', '.join(categories)}" + (f" ({args.district})" if args.district else "")
    grid_txt = (f"square {res.grid['cell_size_m']:g} m (half the assumed {args.block_length:g} m block)"
                if res.grid["kind"] == "square" else f"h3 resolution {res.grid['resolution']}")
    L = [f"# RTM real run: {title}, {'harm-weighted (Tweedie)' if args.outcome == 'harm' else 'offence counts'}", "",
         f"Generated {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} by "
         f"`{invocation}`"
         + ". Numbers are as printed by the script, unedited.", "",
         "## Inputs", "",
         f"- Offences: data.police.uk street-level crime, Essex Police, categories {categories}, "
         f"{len(rows):,} located rows inside the study area (of {parsed.read:,} rows read; "
         f"{len(parsed.rejects):,} rejected by ingest: bad rows or outside the study area). Contains public sector information licensed under OGL v3.0.",
         f"- Harm: weights table '{wt.name}' ({'exact HO code' if exact.all() else 'approximate, by police.uk category'}"
         f"; {int(exact.sum())} of {len(exact)} exact).",
         f"- Outcome: {res.outcome['description']}; training harm {fmt(res.outcome['training_harm'], 1)} days.",
         (f"- Distances: {', '.join(f'{d:g}' for d in res.config['distances'])} m = "
          f"{', '.join(f'{b:g}' for b in res.config['distances_blocks'])} x an ASSUMED median block length of "
          f"{args.block_length:g} m (not measured: no street network in the shared data)."
          if args.block_length else f"- Distances: {', '.join(f'{d:g}' for d in res.config['distances'])} m."),
         f"- Study area: {area.name}; grid {grid_txt}, "
         f"{res.grid['cells']:,} cells, {res.grid['area_km2']:.0f} km².",
         f"- Periods: train {res.periods['train_start']} to {res.periods['train_end']} (exclusive), "
         f"test {res.periods['test_start']} to {res.periods['test_end']}; recent harm window from "
         f"{res.periods['recent_start']}.",
         f"- Offences used: {res.outcome['training_offences']:,} training, {res.outcome['test_offences']:,} test, "
         f"in {res.outcome['cells_with_training_offences']:,} distinct training cells (police.uk snaps locations "
         "to anonymous map points).", "",
         f"| layer | type | features kept | rejected rows | dropped (> {buf:g} m outside) | licence |",
         "|---|---|---:|---:|---:|---|"]
    for lay in res.layers:
        L.append(f"| {lay['name']} | {lay['type']} | {lay['features']} | {lay['rejected']} | "
                 f"{lay['outside_study_area']} | {lay['licence']} |")
    m = res.model
    L += ["", "## Model", "",
          f"- Candidates: {res.selection['variables_built']} non-constant variables "
          f"({len(res.selection['variables_constant'])} constant ones dropped); elastic-net screening "
          f"(alpha {res.screening['alpha']}, {res.screening['folds']}-fold spatially blocked CV, lambda rule "
          f"'{res.screening['rule']}', lambda {res.screening['lambda']:.4g}) kept {res.screening['candidates_kept']}.",
          (f"- Family chosen by BIC: **{m['family']}** (BIC Poisson {m['bic_by_family'].get('poisson', float('nan')):.1f}, "
           f"negative binomial {m['bic_by_family'].get('negbin', float('nan')):.1f})." if m["family"] != "tweedie" else
           f"- Family: **Tweedie** (harm outcome), power {m['dispersion']['tweedie_power']:.3f} "
           f"({m['dispersion']['tweedie_power_estimation']}), phi {m['dispersion']['tweedie_phi']:.2f} (ML)."),
          f"- Selected by family: {m['selected_by_family']}.",
          f"- Intercept {m['intercept']:.4f} (SE {m['intercept_se']:.4f}); NB alpha "
          f"{fmt(m['dispersion']['negbin_alpha'])}; Pearson chi2/df {m['dispersion']['pearson_chi2_per_df']:.3f}; "
          f"BIC {m['bic']:.1f}; log-likelihood {m['log_likelihood']:.1f}.", "",
          "### Factor table", "",
          "| factor | operationalisation | spatial influence (m) | coefficient | SE | p | RRV | 95% CI | cells | "
          "bootstrap: factor selected | bootstrap: same op & distance |",
          "|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|"]
    for r in res.factors:
        blocks = f" ({r.spatial_influence_blocks:g} blocks)" if r.spatial_influence_blocks else ""
        L.append(f"| {r.factor} ({r.type}) | {r.operationalisation} | {r.spatial_influence_m:g}{blocks} | "
                 f"{r.coefficient:.4f} | {r.se:.4f} | {r.p:.3g} | {r.rrv:.3f} | {r.rrv_ci_low:.3f}-{r.rrv_ci_high:.3f} | "
                 f"{r.cells} | {fmt(r.bootstrap_selected, 2)} | {fmt(r.bootstrap_same, 2)} |")
    if not res.factors:
        L.append("| (no factor selected) | | | | | | | | | | |")
    L += ["", "### Risk classes", "", "| class | cells | % area | % training offences | % test offences | "
          "% training harm | % test harm | min RR |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for c in res.risk_classes:
        L.append(f"| {c['label']} | {c['cells']:,} | {c['pct_area']:.2f} | {c['pct_train_offences']:.2f} | "
                 f"{fmt(c['pct_test_offences'], 2)} | {fmt(c.get('pct_train_harm'), 2)} | "
                 f"{fmt(c.get('pct_test_harm'), 2)} | {fmt(c['min_relative_risk'], 3)} |")
    L += ["", "## Validation on the test period", "",
          f"{res.validation.get('test_offences', 0):,} test offences. Hit rate = share of test offences in the "
          "top x % of the area by score (ties shared pro rata); PAI = hit rate / area share; AUC = cell-level "
          "(cells with any test offence vs none).", "",
          "| method | hit 1 % | hit 2 % | hit 5 % | PAI 1 % | PAI 2 % | PAI 5 % | AUC |",
          "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, v in res.validation.get("methods", {}).items():
        L.append(f"| {name} | {v['hit_rate_1pct']:.3f} | {v['hit_rate_2pct']:.3f} | {v['hit_rate_5pct']:.3f} | "
                 f"{v['pai_1pct']:.2f} | {v['pai_2pct']:.2f} | {v['pai_5pct']:.2f} | {fmt(v['auc'])} |")
    hv = res.validation.get("harm_weighted")
    if hv:
        L += ["", f"Judged on test-period harm ({hv['test_harm']:,.0f} days): harm capture and harm-PAI; AUC = cells "
              "with any test harm vs none.", "",
              "| method | harm hit 1 % | harm hit 2 % | harm hit 5 % | harm-PAI 1 % | harm-PAI 2 % | harm-PAI 5 % | AUC |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for name, v in hv["methods"].items():
            L.append(f"| {name} | {v['hit_rate_1pct']:.3f} | {v['hit_rate_2pct']:.3f} | {v['hit_rate_5pct']:.3f} | "
                     f"{v['pai_1pct']:.2f} | {v['pai_2pct']:.2f} | {v['pai_5pct']:.2f} | {fmt(v['auc'])} |")
    if cmp is not None:
        cm = cmp.model
        L += ["", "## The count model on the same offences", "",
              f"Family by BIC: {cm['family']}; factors: "
              + ("; ".join(f"{r.factor} {r.operationalisation} {r.spatial_influence_m:g} m RRV {r.rrv:.2f} "
                           f"({r.rrv_ci_low:.2f}-{r.rrv_ci_high:.2f})" for r in cmp.factors) or "none") + ".", "",
              "| model | PAI 1 % | PAI 5 % | AUC | harm-PAI 1 % | harm-PAI 5 % |", "|---|---:|---:|---:|---:|---:|"]
        for lab, rr in (("harm outcome (Tweedie)", res), ("count outcome", cmp)):
            v, h = rr.validation["methods"]["rtm"], rr.validation.get("harm_weighted", {}).get("methods", {}).get("rtm")
            L.append(f"| {lab} | {v['pai_1pct']:.2f} | {v['pai_5pct']:.2f} | {fmt(v['auc'])} | "
                     f"{fmt(h['pai_1pct'] if h else None, 2)} | {fmt(h['pai_5pct'] if h else None, 2)} |")
    st = res.stability
    L += ["", "## Stability", "", f"{st['resamples']} resamples: {st['method']}.", ""]
    if "factor_frequency" in st:
        L.append(f"- Factor selection frequency: {', '.join(f'{k} {v:.2f}' for k, v in st['factor_frequency'].items()) or 'none'}")
        L.append(f"- Variable selection frequency: {', '.join(f'{k} {v:.2f}' for k, v in list(st['variable_frequency'].items())[:10]) or 'none'}")
        L.append(f"- Mean model size: {st['mean_model_size']:.2f}")
    L += ["", "## Priority places (top 10)", "", "| rank | cell | lon, lat | RR | class | narrative |",
          "|---:|---|---|---:|---:|---|"]
    for p in res.priority_places[:10]:
        L.append(f"| {p.rank} | {p.cell} | {p.lon:.5f}, {p.lat:.5f} | {p.relative_risk:.2f} | {p.risk_class} | "
                 f"{p.narrative} |")
    if not res.priority_places:
        L.append("| | (none: no high-risk cell with recent offences) | | | | |")
    L += ["", "## Timings (s)", "", f"Preparation (boundaries, ingest, layers, grid): {t_prep:.1f}; run_rtm: "
          + ", ".join(f"{k} {v:.2f}" for k, v in res.timings.items()) + ".", ""]
    if res.warnings:
        L += ["Warnings: " + "; ".join(res.warnings), ""]
    text = "\n".join(L)
    print(text)
    if not args.no_write:
        Path(args.out).write_text(text)
    return text


if __name__ == "__main__":
    main()
