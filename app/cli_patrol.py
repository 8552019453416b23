"""The patrol-planning commands beyond tasking and key dates: `harmspot patrols gps|compliance`, `harmspot report`
and `harmspot map export` (thin doors over hotspots.patrol; app/cli.py registers them)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from geodata.settings import Settings


def add_parsers(sub) -> None:
    pa = sub.add_parser("patrols", help="patrol log: GPS pings -> visits; weekly compliance (docs/patrol-planning.md)")
    psub = pa.add_subparsers(dest="patrols_command", required=True)
    g = psub.add_parser("gps", help="detect visits to a saved pack's spots from officer GPS pings and log them")
    g.add_argument("file", help="CSV: unit,timestamp,lon,lat (or easting,northing) [,accuracy_m]")
    g.add_argument("--pack-id", type=int, help="saved tasking pack (default: the latest)")
    g.add_argument("--dataset", help="latest pack of this dataset")
    g.add_argument("--dry-run", action="store_true", help="detect and report, store nothing")
    for name, kind, default, text in (("min-minutes", float, 10, "shortest stay that counts"),
                                      ("buffer-rings", int, 1, "H3 rings added around each spot"),
                                      ("gap-factor", float, 2.5, "bridge gaps up to this many median intervals"),
                                      ("max-gap-minutes", float, 15, "never bridge a longer gap"),
                                      ("max-exit-minutes", float, 2, "stays separated by less are one visit"),
                                      ("max-speed-kmh", float, 250, "impossible speed (teleport)"),
                                      ("max-accuracy-m", float, 100, "reject less accurate pings"),
                                      ("sample-seconds", float, 5, "interpolation step")):
        g.add_argument(f"--{name}", type=kind, default=default, help=f"{text} (default {default})")
    c = psub.add_parser("compliance", help="weekly compliance per area or team of a saved pack (CSV, JSON or PNG)")
    c.add_argument("--pack-id", type=int, help="saved tasking pack (default: the latest)")
    c.add_argument("--dataset", help="latest pack of this dataset")
    c.add_argument("--by", default="area", choices=["area", "team"])
    c.add_argument("--dose-minutes", type=float, help="minutes a visit needs to be a dose (default: the pack's)")
    c.add_argument("--format", default="csv", choices=["csv", "json", "png"])
    c.add_argument("--out", help="write here (needed for png); default: stdout")

    r = sub.add_parser("report", help="harm-trend scrutiny report per quarter or month and area (CSV, JSON, HTML, PNG)")
    r.add_argument("--dataset", required=True)
    r.add_argument("--preset", default="all-crime")
    r.add_argument("--offences", help="comma-separated categories or groups (overrides --preset)")
    r.add_argument("--weights", help="harm weights table (default: the service's)")
    r.add_argument("--by", default="quarter", choices=["quarter", "month"])
    r.add_argument("--area-layer", default="districts", help="boundary layer of the areas, or 'none'")
    r.add_argument("--types", type=int, default=5, help="main offence types counted")
    r.add_argument("--format", default="csv", choices=["csv", "json", "html", "png"])
    r.add_argument("--out", help="write here (needed for png); default: stdout")

    mp = sub.add_parser("map", help="offline map packs (docs/patrol-planning.md#offline-map-packs)")
    msub = mp.add_subparsers(dest="map_command", required=True)
    me = msub.add_parser("export", help="one self-contained HTML map (no server, no internet) of a period or a key "
                         "date; a zip of one map per date for --keydate SET")
    me.add_argument("--dataset", required=True)
    me.add_argument("--keydate", help="SET/YYYY-MM-DD (after / change / forecast layers) or SET (zip of every date)")
    me.add_argument("--from", dest="date_from", help="period start YYYY-MM[-DD] (without --keydate)")
    me.add_argument("--to", dest="date_to", help="period end, inclusive")
    me.add_argument("--preset", help="offence preset (default: all crime)")
    me.add_argument("--offences", help="comma-separated categories or groups (overrides --preset)")
    me.add_argument("--area", help="limit to one area (LAYER:FEATURE_ID, as /hotspots?area=)")
    me.add_argument("--resolution", type=int, help="H3 resolution 7-11 (default 10)")
    me.add_argument("--top", type=int, help="cells per layer (default 50, at most 5000)")
    me.add_argument("--weights", help="harm weights table (default: the service's)")
    me.add_argument("--out", required=True, help="FILE.html (or FILE.zip for a whole key-date set)")


def cmd_patrols(args: argparse.Namespace, settings: Settings) -> int:
    from geodata.store import Store
    from hotspots.patrol import gps, tasking

    store = Store(settings.store_path)
    try:
        if args.patrols_command == "gps":
            params = gps.GpsParams(min_minutes=args.min_minutes, buffer_rings=args.buffer_rings,
                                   gap_factor=args.gap_factor, max_gap_minutes=args.max_gap_minutes,
                                   max_exit_minutes=args.max_exit_minutes, max_speed_kmh=args.max_speed_kmh,
                                   max_accuracy_m=args.max_accuracy_m, sample_seconds=args.sample_seconds)
            header, spots = tasking.get_pack(store, args.pack_id, args.dataset)
            try:
                result = gps.record_gps(store, Path(args.file).read_bytes(), header, spots, params,
                                        settings.gps_ping_retention_days, settings.gps_max_pings, args.dry_run)
            except gps.GpsError as exc:
                print(json.dumps({"error": str(exc), "rows": exc.errors[:50]}, indent=1, default=str), file=sys.stderr)
                return 2
            print(json.dumps(result.to_dict(), indent=1, default=str))
        elif args.patrols_command == "compliance":
            from app.render import to_csv, to_json
            from hotspots.patrol import governance

            header, spots = tasking.get_pack(store, args.pack_id, args.dataset)
            table, meta = governance.weekly(store, header, spots, args.by, args.dose_minutes)
            if args.format == "png":
                if not args.out:
                    raise ValueError("--format png needs --out FILE.png")
                _write(args.out, governance.chart_png(table, meta))
            else:
                text = to_csv(table) if args.format == "csv" else json.dumps(
                    {**meta, "rows": to_json({}, table)["cells"]}, indent=1, default=str)
                _write(args.out, text)
    finally:
        store.close()
    return 0


def _write(out: str | None, content: str | bytes) -> None:
    if out:
        Path(out).write_bytes(content if isinstance(content, bytes) else content.encode())
        print(f"wrote {out}", file=sys.stderr)
    else:
        sys.stdout.write(content if isinstance(content, str) else content.decode())


def cmd_report(args: argparse.Namespace, settings: Settings) -> int:
    from app.render import to_csv, to_json
    from app.routes.reports import report_html
    from app.state import load_weights
    from geodata.store import Store
    from hotspots.patrol import harmtrend
    from hotspots.ranking.query import HotspotQuery

    store = Store(settings.store_path)
    try:
        weights = load_weights(settings, store)
        q = HotspotQuery.model_validate({"dataset": args.dataset, "preset": args.preset, "weights": args.weights,
                                         "offences": args.offences.split(",") if args.offences else None})
        layer = None if args.area_layer.lower() == "none" else args.area_layer
        rep = harmtrend.harm_trend(store, q, weights, args.by, layer, args.types)
    finally:
        store.close()
    if args.format == "png":
        if not args.out:
            raise ValueError("--format png needs --out FILE.png")
        _write(args.out, harmtrend.chart_png(rep))
    elif args.format == "html":
        _write(args.out, report_html(rep, settings.protective_marking))
    elif args.format == "csv":
        _write(args.out, to_csv(rep.rows))
    else:
        _write(args.out, json.dumps({**rep.meta, "rows": to_json({}, rep.rows)["cells"]}, indent=1, default=str))
    return 0


def cmd_map(args: argparse.Namespace, settings: Settings) -> int:
    from app import map_export as mx
    from app.state import load_weights
    from geodata.store import Store
    from hotspots.ranking.query import HotspotQuery

    body = {"dataset": args.dataset, "from": args.date_from, "to": args.date_to, "preset": args.preset,
            "offences": args.offences.split(",") if args.offences else None, "area": args.area,
            "resolution": args.resolution, "weights": args.weights}
    if args.top is not None:
        body["top"] = args.top
    q = HotspotQuery.model_validate({k: v for k, v in body.items() if v is not None})
    if q.top is None or q.top > mx.MAX_CELLS:
        raise ValueError(f"--top: at most {mx.MAX_CELLS} cells per layer in a map pack")
    store = Store(settings.store_path)
    try:
        store.require_dataset(args.dataset)
        weights = load_weights(settings, store)
        try:
            name, media, content = mx.make(store, weights, settings.protective_marking, q, args.keydate)
        except mx.NotFound as exc:
            raise ValueError(str(exc)) from exc
    finally:
        store.close()
    if media == "application/zip" and not args.out.endswith(".zip"):
        print(f"harmspot map export: --keydate {args.keydate} is a whole set: writing a zip ({name})", file=sys.stderr)
    _write(args.out, content)
    return 0


HANDLERS = {"patrols": cmd_patrols, "report": cmd_report, "map": cmd_map}
