"""`harmspot areas add|list|delete`: boundary layers (the same engine as POST /areas, GET /areas, DELETE /areas);
`harmspot roads add|list|delete`: road layers (POST /roads, GET /roads, DELETE /roads)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from geodata.settings import Settings


def add_parsers(sub) -> None:
    ar = sub.add_parser("areas", help="boundary layers: add a GeoJSON/GeoPackage/zipped Shapefile, list, delete "
                        "(docs/map.md#boundary-layers)")
    ar.add_argument("action", choices=["add", "list", "delete"])
    ar.add_argument("file", nargs="?", help="add: the boundary file (any CRS; reprojected to WGS84)")
    ar.add_argument("--layer", help="layer name (add/delete): lower-case letters, digits, _ or -, e.g. districts")
    ar.add_argument("--name-field", help="field with the feature name (guessed when left out, e.g. LAD22NM)")
    ar.add_argument("--id-field", help="field with the feature id/code (guessed when left out, e.g. LAD22CD)")
    ar.add_argument("--district-field", help="field with the district each feature lies in")
    ar.add_argument("--source-layer", help="layer inside a GeoPackage holding several")
    ar.add_argument("--dataset", help="list: also the dataset's automatic layers and its district layer")
    ro = sub.add_parser("roads", help="road layers (street lines drawn under the hexagons on the map and the patrol "
                        "sheets): add a GeoJSON/GeoPackage/zipped Shapefile, list, delete")
    ro.add_argument("action", choices=["add", "list", "delete"])
    ro.add_argument("file", nargs="?", help="add: the line file (any CRS; reprojected to WGS84)")
    ro.add_argument("--layer", default="roads", help="layer name (default roads)")
    ro.add_argument("--name-field", help="field with the road name (guessed when left out: name, name1, road_name)")
    ro.add_argument("--source-layer", help="layer inside a GeoPackage holding several")


def cmd_areas(args: argparse.Namespace, settings: Settings) -> int:
    from geodata import boundaries as bd
    from geodata.areas import layer_listing

    store = settings.open_store()
    try:
        if args.action == "list":
            out = layer_listing(store, args.dataset)
        elif args.action == "delete":
            if not args.layer:
                raise ValueError("areas delete needs --layer")
            out = {"layer": args.layer, "deleted_features": bd.delete_layer(store, args.layer)}
            if not out["deleted_features"]:
                raise ValueError(f"no loaded area layer '{args.layer}'")
        else:
            if not (args.file and args.layer):
                raise ValueError("areas add needs FILE and --layer")
            path = Path(args.file)
            out = bd.add_layer(store, args.layer, path.read_bytes(), path.name, args.name_field, args.id_field,
                               args.district_field, args.source_layer)
    except bd.BoundaryError as exc:
        details = f"; {json.dumps(exc.details[:10])}" if exc.details else ""
        raise ValueError(f"{exc}{details}") from exc
    finally:
        store.close()
    print(json.dumps(out, indent=1, default=str))
    return 0


def cmd_roads(args: argparse.Namespace, settings: Settings) -> int:
    from geodata import boundaries as bd
    from geodata import roads as rd

    store = settings.open_store()
    try:
        if args.action == "list":
            out = {"layers": rd.list_roads(store)}
        elif args.action == "delete":
            out = {"layer": args.layer, "deleted_features": rd.delete_roads(store, args.layer)}
            if not out["deleted_features"]:
                raise ValueError(f"no road layer '{args.layer}'")
        else:
            if not args.file:
                raise ValueError("roads add needs FILE")
            path = Path(args.file)
            out = rd.add_roads(store, args.layer, path.read_bytes(), path.name, args.name_field, args.source_layer)
    except bd.BoundaryError as exc:
        raise ValueError(str(exc)) from exc
    finally:
        store.close()
    print(json.dumps(out, indent=1, default=str))
    return 0


HANDLERS = {"areas": cmd_areas, "roads": cmd_roads}
