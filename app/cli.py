"""The `harmspot` command: ingest, hotspots, serve (thin door onto the same engines as the API)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from geodata.settings import Settings, get_settings


def _progress_sources(files: list[str]):
    from tqdm import tqdm

    for f in tqdm(files, desc="reading", unit="file", file=sys.stderr, disable=len(files) < 2):
        yield (f, None)


def cmd_ingest(args: argparse.Namespace, settings: Settings) -> int:
    from app.state import load_weights
    from geodata.ingest import StudyArea, parse_stream

    store = settings.open_store()
    try:
        weights = load_weights(settings, store)
        area = StudyArea.from_geojson(Path(args.area)) if args.area else StudyArea()
        try:
            mapping = json.loads(args.mapping) if args.mapping else None
        except json.JSONDecodeError as exc:
            raise ValueError(f"--mapping is not JSON ({exc})") from exc
        chunks = parse_stream(_progress_sources(args.files), area, mapping, weights.by_title or None,
                              settings.ingest_limits())
        report = store.ingest(args.dataset, chunks, area if args.area else None)
        if args.rejects and report.rejected:
            store.query_df("SELECT file, line, reason, raw FROM rejects WHERE batch_id = ? ORDER BY file, line",
                           [report.batch_id]).to_csv(args.rejects, index=False)
    finally:
        store.close()
    print(json.dumps(report.to_dict(), indent=2))
    return 0


def cmd_hotspots(args: argparse.Namespace, settings: Settings) -> int:
    from app.render import to_csv, to_geojson, to_json
    from app.routes.hotspots import fields_for
    from app.state import load_weights
    from hotspots.ranking.harmspots import harm_spots
    from hotspots.ranking.query import HotspotQuery, parse_bbox

    store = settings.open_store()
    try:
        weights = load_weights(settings, store)
        q = HotspotQuery.model_validate({
            "dataset": args.dataset, "from": args.date_from, "to": args.date_to, "preset": args.preset,
            "offences": args.offences.split(",") if args.offences else None, "bbox": parse_bbox(args.bbox),
            "area": args.area, "resolution": args.resolution, "weights": args.weights, "top": args.top,
            "include_asb": args.include_asb, "rank_by": args.rank_by, "method": args.method})
        if args.engine == "dask":
            result = _dask_run(store, q, weights, args)
        else:
            result = harm_spots(store, q, weights)
    finally:
        store.close()
    fields = fields_for(result)
    if args.format == "csv":
        sys.stdout.write(to_csv(result.top_cells, fields))
    elif args.format == "geojson":
        print(json.dumps(to_geojson(result.meta(), result.top_cells, fields)))
    else:
        print(json.dumps(to_json(result.meta(), result.top_cells, fields), indent=1, default=str))
    return 0


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from app.main import create_app

    from app.security import active_key_count, bootstrap_admin_key, is_loopback_host
    # the bind address goes into the settings: demo mode is re-checked against it at every request
    settings = settings.model_copy(update={"host": args.host, "port": args.port})
    loopback = is_loopback_host(args.host)
    store = settings.open_store()
    try:
        # a start that must be keyed (non-loopback bind, or keys_mode=required) and has no key gets an admin key:
        # the deployment's secret (HARMSPOT_ADMIN_KEY / _FILE) or a generated one, printed once below
        made = bootstrap_admin_key(store, settings) if (not loopback or settings.keys_mode == "required") else None
        demo = settings.keys_mode == "auto" and loopback and active_key_count(store) == 0
    finally:
        store.close()
    if made is not None and made[0] == "generated":
        print("harmspot serve: no API key existed, so an ADMIN KEY was generated. It is shown this once; only its "
              "salted hash is stored:\n\n    " + str(made[1]) + "\n\nSend it as the X-API-Key header. Create "
              "personal keys with POST /keys and revoke this one (DELETE /keys/<id>). To choose the first key "
              "instead, set HARMSPOT_ADMIN_KEY or HARMSPOT_ADMIN_KEY_FILE (docs/security.md#first-start).",
              file=sys.stderr, flush=True)
    elif made is not None:
        print("harmspot serve: no API key existed; the admin key from HARMSPOT_ADMIN_KEY(_FILE) is stored",
              file=sys.stderr, flush=True)
    if demo:
        print("harmspot serve: LOCAL DEMO MODE (no API keys: no access control, loopback only)", file=sys.stderr)
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level="info")
    return 0


def cmd_keys(args: argparse.Namespace, settings: Settings) -> int:
    from app.security import create_key, list_keys, new_key, revoke_key

    if args.keys_command == "generate":
        print(new_key())
        print("a new key, stored nowhere: give it to HARMSPOT_ADMIN_KEY (or a secrets file) for a first start",
              file=sys.stderr)
        return 0
    store = settings.open_store()
    try:
        if args.keys_command == "create":
            key_id, key = create_key(store, args.role, args.name)
            print(json.dumps({"key_id": key_id, "name": args.name, "role": args.role, "key": key}))
            print("store this key now: it is not shown again (send it as the X-API-Key header)", file=sys.stderr)
        elif args.keys_command == "revoke":
            if not revoke_key(store, args.key_id):
                print(f"harmspot keys: no active key '{args.key_id}'", file=sys.stderr)
                return 1
            print(json.dumps({"key_id": args.key_id, "revoked": True}))
        else:
            print(list_keys(store).to_string(index=False))
    finally:
        store.close()
    return 0


def _dask_run(store, q, weights, args: argparse.Namespace):
    from hotspots.executors.dask_backend import dask_harm_spots

    if not args.parquet:
        raise ValueError("--engine dask needs --parquet DIR (make one with: harmspot export-parquet DIR)")
    if args.scheduler or args.workers:
        from distributed import Client, LocalCluster

        cluster = None if args.scheduler else LocalCluster(n_workers=args.workers, threads_per_worker=1,
                                                           host="127.0.0.1", dashboard_address=None)
        with Client(args.scheduler or cluster):
            try:
                return dask_harm_spots(store, Path(args.parquet), q, weights)
            finally:
                if cluster is not None:
                    cluster.close()
    return dask_harm_spots(store, Path(args.parquet), q, weights)


def cmd_export_parquet(args: argparse.Namespace, settings: Settings) -> int:
    from hotspots.executors.dask_backend import export_parquet

    store = settings.open_store()
    try:
        print(json.dumps(export_parquet(store, Path(args.dir), args.dataset)))
    finally:
        store.close()
    return 0


def cmd_tasking(args: argparse.Namespace, settings: Settings) -> int:
    from app.render import to_geojson, to_json
    from app.routes.patrol import patrol_sheet_html, sheet_roads, tasking_csv
    from app.state import load_weights
    from hotspots.patrol import tasking as tasking
    from hotspots.ranking.query import HotspotQuery

    store = settings.open_store()
    try:
        weights = load_weights(settings, store)
        q = HotspotQuery.model_validate({"dataset": args.dataset, "from": args.date_from, "to": args.date_to,
                                         "preset": args.preset, "area": args.area, "resolution": args.resolution,
                                         "method": args.method})
        params = tasking.TaskingParams(area_layer=args.layer, spots_per_area=args.spots_per_area,
                                       total_minutes=args.total_minutes, visits_per_day=args.visits_per_day,
                                       plan_from=args.plan_from, plan_days=args.plan_days,
                                       include_police_stations=args.include_police_stations)
        pack = tasking.build_pack(store, q, weights, params)
        if args.save:
            print(f"saved tasking pack {tasking.save_pack(store, pack)}", file=sys.stderr)
        fields = list(tasking.TASKING_FIELDS)
        out = {"csv": lambda: tasking_csv(pack),
               "html": lambda: patrol_sheet_html(pack, settings.protective_marking, sheet_roads(store)),
               "geojson": lambda: json.dumps(to_geojson(pack.meta(), pack.rows, fields)),
               "json": lambda: json.dumps(to_json(pack.meta(), pack.rows, fields), indent=1, default=str)}[args.format]()
    finally:
        store.close()
    sys.stdout.write(out if out.endswith("\n") else out + "\n")
    return 0


def cmd_keydates(args: argparse.Namespace, settings: Settings) -> int:
    from datetime import date

    from app.render import to_csv, to_json
    from app.routes.patrol import KEYDATE_FIELDS
    from app.state import load_weights
    from hotspots.patrol import keydates as keydates
    from hotspots.ranking.query import HotspotQuery

    store = settings.open_store()
    try:
        if args.action == "list":
            print(json.dumps([s.to_dict() for s in keydates.list_sets(store)], indent=1))
            return 0
        if not (args.dataset and args.date):
            raise ValueError("keydates show needs --dataset and --date")
        weights = load_weights(settings, store)
        q = HotspotQuery.model_validate({"dataset": args.dataset, "preset": args.preset, "top": args.top})
        res = keydates.key_date_hotspots(store, q, weights, keydates.get_set(store, args.set),
                                         date.fromisoformat(args.date), args.window_days, args.month_rule, top=args.top)
    finally:
        store.close()
    cells = res.cells.head(args.top)
    if args.format == "csv":
        sys.stdout.write(to_csv(cells, KEYDATE_FIELDS))
    else:
        print(json.dumps({**to_json(res.meta(), cells, KEYDATE_FIELDS),
                          "forecast": to_json({}, res.forecast)["cells"]}, indent=1, default=str))
    return 0


def cmd_backtest(args: argparse.Namespace, settings: Settings) -> int:
    from tqdm import tqdm

    from app.state import load_weights
    from hotspots.stats.backtest import METHODS, BacktestConfig
    from hotspots.ranking.query import HotspotQuery
    from hotspots.stats.for_query import backtest_for_query

    store = settings.open_store()
    bar = tqdm(total=1, desc="backtest", unit="origin", file=sys.stderr, disable=args.quiet)

    def progress(done: int, total: int, msg: str) -> None:
        bar.total = total
        bar.n = done
        bar.set_postfix_str(msg)

    try:
        weights = load_weights(settings, store)
        q = HotspotQuery.model_validate({"dataset": args.dataset, "from": args.date_from, "to": args.date_to,
                                         "preset": args.preset, "area": args.area, "resolution": args.resolution})
        cfg = BacktestConfig(train_slices=args.train_slices, slice=args.slice, bootstrap=args.bootstrap,
                             methods=tuple(args.methods.split(",")) if args.methods else METHODS)
        ev = backtest_for_query(store, q, weights, cfg, progress=progress)
    finally:
        bar.close()
        store.close()
    res = ev.result
    if args.png:
        print(f"wrote {res.plot_capture(args.png, title=f'{args.dataset}: harm capture, next period')}", file=sys.stderr)
    if args.format == "md":
        print(f"{args.dataset}: {res.slices['slices']} slices of {res.slices['length']} {res.slices['unit']}, "
              f"{res.per_origin.origin.nunique()} origins, domain {res.domain['cells']:,} cells at res "
              f"{args.resolution} ({res.domain['source']})\n")
        print(res.table() + "\n\n" + res.table(("harm_pei",)))
    else:
        print(json.dumps({**ev.meta, "config": res.config, "slices": res.slices, "domain": res.domain,
                          "summary": res.summary.to_dict("records"), "caveats": res.caveats}, indent=1, default=str))
    return 0


def cmd_layer(args: argparse.Namespace, settings: Settings) -> int:
    from geodata import layer_store
    from geodata.layers import DEFAULT_BUFFER_M

    store = settings.open_store()
    try:
        if args.action == "list":
            print(json.dumps(layer_store.list_layers(store), indent=1, default=str))
            return 0
        if not (args.file and args.name and args.type):
            raise ValueError("layer add needs FILE, --name and --type")
        summary = layer_store.add_layer(
            store, args.file, args.name, args.type, plural=args.plural or "", licence=args.licence or "",
            attribution=args.attribution or "", dataset=args.dataset,
            buffer_m=args.buffer_m if args.buffer_m is not None else DEFAULT_BUFFER_M, replace=args.replace)
    finally:
        store.close()
    print(json.dumps(summary, indent=1, default=str))
    return 0


def cmd_rtm(args: argparse.Namespace, settings: Settings) -> int:
    """A Risk Terrain Model run through the same planner and executor as POST /rtm/runs, in the foreground;
    the run is stored (GET /rtm/runs/{id} and the map show it) and summarised on stdout."""
    from tqdm import tqdm

    from app.rtm_jobs import create_run, ensure_tables, get_run, plan_run, run_plan
    from app.state import load_weights

    body = {k: v for k, v in {
        "dataset": args.dataset, "from": args.date_from, "to": args.date_to, "test_months": args.test_months,
        "preset": args.preset, "offences": args.offences.split(",") if args.offences else None,
        "layers": args.layers.split(",") if args.layers else None, "resolution": args.resolution,
        "area": args.area, "weights": args.weights, "outcome": args.outcome, "tweedie_power": args.tweedie_power,
        "grid": args.grid, "cell_size_m": args.cell_size, "block_length_m": args.block_length,
        "distances": [float(v) for v in args.distances.split(",")] if args.distances else None,
        "distances_blocks": [float(v) for v in args.distances_blocks.split(",")] if args.distances_blocks else None,
        "bootstrap": args.bootstrap, "seed": args.seed}.items() if v is not None}
    from app.routes.rtm import RTMRunRequest

    body = RTMRunRequest.model_validate(body).model_dump(by_alias=True)  # the API's validation, same messages
    store = settings.open_store()
    try:
        weights = load_weights(settings, store)
        ensure_tables(store)
        plan = plan_run(store, weights, body)
        run_id = create_run(store, plan)
        bar = tqdm(total=100, desc="rtm", unit="%", file=sys.stderr, disable=args.quiet)

        def report(stage: str, fraction: float) -> None:
            bar.set_postfix_str(stage)
            bar.n = round(100 * fraction)
            bar.refresh()

        ok = run_plan(store, weights, run_id, plan, report=report)
        bar.close()
        run = get_run(store, run_id)
    finally:
        store.close()
    if not ok:
        raise ValueError(f"RTM run {run_id} failed: {run['error']}")
    res = run["result"]
    if args.format == "json":
        print(json.dumps({"id": run_id, **res}, indent=1))
        return 0
    m = res["model"]
    lines = [f"RTM run {run_id}: {res['outcome']['description']}; {res['grid']['kind']} grid, "
             f"{res['grid']['cells']:,} cells; family {m['family']}, BIC {m['bic']:.1f}", "",
             "factor | operationalisation | spatial influence | RRV (95% CI) | p", "---|---|---|---|---"]
    for f in res["factors"]:
        blocks = f" ({f['spatial_influence_blocks']:g} blocks)" if f.get("spatial_influence_blocks") else ""
        lines.append(f"{f['factor']} | {f['operationalisation']} | {f['spatial_influence_m']:g} m{blocks} | "
                     f"{f['rrv']:.2f} ({f['rrv_ci_low']:.2f}-{f['rrv_ci_high']:.2f}) | {f['p']:.3g}")
    v = (res.get("validation") or {}).get("methods", {})
    if v:
        lines += ["", "validation (test period): " + "; ".join(
            f"{k} PAI@5% {x['pai_5pct']:.2f}" for k, x in v.items())]
    lines += ["", "priority places:"] + [f"{p['rank']}. {p['cell']}: {p['narrative']}"
                                          for p in res["priority_places"][:args.places]]
    lines += [f"warning: {w}" for w in res.get("warnings", [])]
    print("\n".join(lines))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="harmspot", description="Harm-weighted hotspots for patrol planning")
    sub = p.add_subparsers(dest="command", required=True)

    ing = sub.add_parser("ingest", help="ingest offence files; prints the ingest report as JSON")
    ing.add_argument("files", nargs="+", help="police.uk CSV(s) or zip, force extract CSV, GeoJSON, Parquet")
    ing.add_argument("--dataset", required=True, help="dataset name")
    ing.add_argument("--area", help="study area GeoJSON: rows outside it are rejected")
    ing.add_argument("--mapping", help='extract column mapping JSON, e.g. \'{"record_id": "URN"}\'')
    ing.add_argument("--rejects", help="write rejected rows (file, line, reason, raw) to this CSV")

    hs = sub.add_parser("hotspots", help="rank harm spots; writes JSON, CSV or GeoJSON to stdout")
    hs.add_argument("--dataset", required=True)
    hs.add_argument("--from", dest="date_from")
    hs.add_argument("--to", dest="date_to", help="inclusive; a month means its whole month")
    hs.add_argument("--preset", default="op-ark")
    hs.add_argument("--offences", help="comma-separated categories or offence groups (overrides --preset)")
    hs.add_argument("--bbox", help="minLon,minLat,maxLon,maxLat")
    hs.add_argument("--area", help="layer:feature_id, or a ward/district name")
    hs.add_argument("--resolution", type=int, default=10)
    hs.add_argument("--weights", help="weights table name")
    hs.add_argument("--top", type=int, default=20)
    hs.add_argument("--include-asb", action="store_true")
    hs.add_argument("--rank-by", default="harm", choices=["harm", "count"])
    hs.add_argument("--method", choices=["observed", "forecast"],
                    help="observed (default): ranked by the period's harm; forecast: by expected harm after --to")
    hs.add_argument("--format", default="json", choices=["json", "csv", "geojson"])
    hs.add_argument("--engine", default="embedded", choices=["embedded", "dask"],
                    help="embedded: DuckDB store; dask: dask.dataframe over a Parquet export (--parquet)")
    hs.add_argument("--parquet", help="partitioned Parquet export (harmspot export-parquet) for --engine dask")
    hs.add_argument("--workers", type=int, default=0,
                    help="--engine dask: start a local cluster of N worker processes (0: threads in-process)")
    hs.add_argument("--scheduler", help="--engine dask: address of a running Dask scheduler (tcp://host:8786)")

    ex = sub.add_parser("export-parquet", help="export offences as Parquet partitioned by dataset and month")
    ex.add_argument("dir", help="output folder (replaced)")
    ex.add_argument("--dataset", action="append", help="only this dataset (repeatable); default: all")

    tk = sub.add_parser("tasking", help="tasking pack: top harm spots per area within capacity (docs/patrol-planning.md)")
    tk.add_argument("--dataset", required=True)
    tk.add_argument("--from", dest="date_from", help="look-back start (default: all history for the forecast; "
                    "last month / last 14 days with --method observed)")
    tk.add_argument("--to", dest="date_to")
    tk.add_argument("--preset", default="op-ark")
    tk.add_argument("--method", choices=["observed", "forecast"],
                    help="forecast (default): spots by expected harm after the look-back; observed: by its harm")
    tk.add_argument("--area", help="restrict to one area (layer:feature_id or a name)")
    tk.add_argument("--resolution", type=int, default=10)
    tk.add_argument("--layer", default="districts", help="boundary layer of patrol areas")
    tk.add_argument("--spots-per-area", type=int, default=5)
    tk.add_argument("--total-minutes", type=float, help="patrol minutes over the whole plan period")
    tk.add_argument("--visits-per-day", type=float, default=2.0)
    tk.add_argument("--plan-from", help="YYYY-MM-DD (default: today)")
    tk.add_argument("--plan-days", type=int, default=14)
    tk.add_argument("--include-police-stations", action="store_true",
                    help="keep cells whose main location text is 'Police Station' (left out by default)")
    tk.add_argument("--save", action="store_true", help="save the pack (baseline for new/continuing/dropped)")
    tk.add_argument("--format", default="csv", choices=["csv", "json", "geojson", "html"])

    kd = sub.add_parser("keydates", help="key-date sets; harm spots after a key date with the analogue forecast")
    kd.add_argument("action", choices=["list", "show"])
    kd.add_argument("--set", default="england-2020-21")
    kd.add_argument("--date", help="YYYY-MM-DD, a date of the set")
    kd.add_argument("--dataset")
    kd.add_argument("--preset", default="op-ark")
    kd.add_argument("--top", type=int, default=20)
    kd.add_argument("--window-days", type=int, default=28)
    kd.add_argument("--month-rule", default="exclude", choices=["exclude", "majority"])
    kd.add_argument("--format", default="json", choices=["json", "csv"])

    bt = sub.add_parser("backtest", help="rolling-origin backtest of hot spot methods (docs/statistics.md#backtest)")
    bt.add_argument("--dataset", required=True)
    bt.add_argument("--resolution", type=int, default=10, help="H3 resolution (default 10, as /evaluation)")
    bt.add_argument("--train-slices", type=int, default=None,
                    help="training slices before each origin (default 12, or the longest the data allow)")
    bt.add_argument("--slice", help="slice length, e.g. 14D or 1M (default: 1M month-only data, else 14D)")
    bt.add_argument("--methods", help="comma-separated methods (default: all)")
    bt.add_argument("--preset", default="op-ark", help="offence selection (default op-ark, as /evaluation)")
    bt.add_argument("--area", help="restrict to one area (layer:feature_id or a name)")
    bt.add_argument("--from", dest="date_from")
    bt.add_argument("--to", dest="date_to")
    bt.add_argument("--bootstrap", type=int, default=2000)
    bt.add_argument("--format", default="md", choices=["json", "md"])
    bt.add_argument("--png", help="write the harm-capture curve to this PNG")
    bt.add_argument("--quiet", action="store_true", help="no progress bar")

    ly = sub.add_parser("layer", help="environmental point layers for RTM: add a file, or list the stored ones")
    ly.add_argument("action", choices=["add", "list"])
    ly.add_argument("file", nargs="?", help="CSV (lon/lat or easting/northing), GeoJSON or GeoPackage")
    ly.add_argument("--name", help="layer id: letters, digits, _ or -")
    ly.add_argument("--type", help="singular noun for narratives, e.g. 'bus stop'")
    ly.add_argument("--plural")
    ly.add_argument("--licence")
    ly.add_argument("--attribution")
    ly.add_argument("--dataset", help="keep features within --buffer-m of this dataset's study area")
    ly.add_argument("--buffer-m", type=float, help="edge buffer in metres (default 400)")
    ly.add_argument("--replace", action="store_true")

    rt = sub.add_parser("rtm", help="Risk Terrain Model run (as POST /rtm/runs, in the foreground; docs/rtm.md)")
    rt.add_argument("--dataset")
    rt.add_argument("--area", help="layer:feature_id or a name, e.g. districts:Chelmsford")
    rt.add_argument("--preset", help="offence preset (default op-ark)")
    rt.add_argument("--offences", help="comma-separated categories or offence groups")
    rt.add_argument("--layers", help="comma-separated layer names (default: every stored layer)")
    rt.add_argument("--from", dest="date_from", help="training start")
    rt.add_argument("--to", dest="date_to", help="training end (inclusive)")
    rt.add_argument("--test-months", type=int, default=3)
    rt.add_argument("--resolution", type=int, default=10)
    rt.add_argument("--weights")
    rt.add_argument("--outcome", choices=["count", "harm"], default="count")
    rt.add_argument("--tweedie-power", type=float)
    rt.add_argument("--grid", choices=["h3", "square"], default="h3")
    rt.add_argument("--cell-size", type=float, help="square grid cell side, metres")
    rt.add_argument("--block-length", type=float, help="median street-block length, metres")
    rt.add_argument("--distances", help="comma-separated metres")
    rt.add_argument("--distances-blocks", help="comma-separated multiples of --block-length")
    rt.add_argument("--bootstrap", type=int, default=5)
    rt.add_argument("--seed", type=int, default=0)
    rt.add_argument("--places", type=int, default=10, help="priority places to print")
    rt.add_argument("--format", choices=["text", "json"], default="text")
    rt.add_argument("--quiet", action="store_true", help="no progress bar")

    sv = sub.add_parser("serve", help="run the web service (map at /, API docs at /docs)")
    sv.add_argument("--host", default=None)
    sv.add_argument("--port", type=int, default=None)

    ks = sub.add_parser("keys", help="API keys: create, revoke, list (run while the service is stopped)")
    ksub = ks.add_subparsers(dest="keys_command", required=True)
    kc = ksub.add_parser("create", help="create a key; prints it once (only its salted hash is stored)")
    kc.add_argument("--role", required=True, choices=["public", "viewer", "analyst", "admin"],
                    help="public: disclosure-controlled output only (docs/security.md#public-output-mode)")
    kc.add_argument("--name", required=True, help="who or what holds the key")
    kr = ksub.add_parser("revoke", help="revoke a key by its id")
    kr.add_argument("key_id")
    ksub.add_parser("list", help="list keys (ids, names, roles, state; never secrets)")
    ksub.add_parser("generate", help="print a new well-formed key without storing it (for HARMSPOT_ADMIN_KEY)")
    from app import cli_patrol  # patrols gps|compliance, report, map export

    cli_patrol.add_parsers(sub)
    from app import cli_areas  # areas add|list|delete

    cli_areas.add_parsers(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    import os

    os.umask(0o077)  # what harmspot writes (the store, its WAL, exports) is private to the user running it
    args = build_parser().parse_args(argv)
    settings = get_settings()
    if args.command == "serve":
        args.host = args.host or settings.host
        args.port = args.port or settings.port
    handlers = {"ingest": cmd_ingest, "hotspots": cmd_hotspots, "serve": cmd_serve, "keys": cmd_keys,
                "export-parquet": cmd_export_parquet, "tasking": cmd_tasking, "keydates": cmd_keydates,
                "backtest": cmd_backtest, "layer": cmd_layer, "rtm": cmd_rtm}
    from app.cli_patrol import HANDLERS as patrol_handlers

    handlers.update(patrol_handlers)
    from app.cli_areas import HANDLERS as area_handlers

    handlers.update(area_handlers)
    try:
        return handlers[args.command](args, settings)
    except (ValueError, OSError) as exc:  # IngestError, StoreError, WeightsError, ValidationError are ValueErrors
        print(f"harmspot {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # the store's own errors (e.g. disk full) as one clean line, no traceback
        import duckdb

        if not isinstance(exc, duckdb.Error):
            raise
        print(f"harmspot {args.command}: store error: {exc}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
