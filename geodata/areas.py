"""Which area layer a request means, for a given dataset.

Two kinds of layer live in the store (``areas`` + ``area_cells``):

- **loaded** layers (``harmspot areas add`` / ``POST /areas``, the bundled Essex districts and wards): shared by
  every dataset, stored under their own name (``districts``, ``wards``, ``beats``...);
- **automatic** layers built from each dataset's own records (:mod:`geodata.auto_areas`): ``lad`` and ``lsoa``,
  stored as ``lad@<dataset>``, approximate.

The patrol-area layer of a request (tasking, spikes by area, the map's district list, the area filter's
``districts:`` prefix) is :func:`district_layer`: the loaded ``districts`` layer when it covers the dataset
(at least :data:`COVER_SHARE` of its records fall in it), else the dataset's automatic ``lad`` layer; every
response names the layer used and why.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from geodata.auto_areas import AUTO_LAYERS, META_SCHEMA, SEPARATOR, auto_layer, split_layer
from geodata.store import DATASET_LAYER, NotStored, Store, StoreError

DISTRICTS = "districts"
COVER_SHARE = 0.5  # a loaded layer "covers" a dataset when it holds at least this share of its located records


@dataclass(frozen=True)
class LayerChoice:
    stored: str          # the name in the areas tables (lad@leics, districts)
    name: str            # the name requests use (lad, districts)
    kind: str            # 'loaded' or 'automatic'
    approximate: bool
    rule: str            # why this layer

    def to_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "approximate": self.approximate, "rule": self.rule,
                "stored_as": self.stored}


def _layer_exists(store: Store, stored: str) -> bool:
    return stored in store.cached("area_layer_names", lambda: frozenset(
        store.query_df("SELECT DISTINCT layer FROM areas")["layer"].tolist()))


def layer_cells(store: Store, stored: str, purpose: str | None = None) -> pd.DataFrame:
    """The res-10 cells of the stored layer ``stored`` and the features they lie in: the distinct (``h3_10``
    uint64, ``feature_id`` str) pairs, ordered by cell then feature (a cell of two features comes twice, the
    smaller id first, so taking the first row per cell is deterministic). NotStored (the API's 404) when the
    layer has no cell: not loaded, or its features all smaller than a cell; ``purpose`` (why the caller needs
    the layer) is added to that message."""
    cells = store.query_df("SELECT DISTINCT h3_10, feature_id FROM area_cells WHERE layer = ? "
                           "ORDER BY h3_10, feature_id", [stored])
    if cells.empty:
        why = f" ({purpose})" if purpose else ""
        if _layer_exists(store, stored):
            raise NotStored(f"area layer '{stored}' holds no H3 res-10 cell{why}: its features are all smaller "
                            "than a cell")
        raise NotStored(f"no area layer '{stored}' is loaded{why}; layers: {store.area_layers()['layer'].tolist()}")
    return pd.DataFrame({"h3_10": cells["h3_10"].to_numpy(np.uint64), "feature_id": cells["feature_id"].astype(str)})


def coverage_share(store: Store, dataset: str, stored: str) -> float:
    """Share of the dataset's located records whose res-10 cell lies in the layer (memoised per store state)."""
    def compute() -> float:
        v = store.scalar("""SELECT avg(CASE WHEN c.h3_10 IS NULL THEN 0 ELSE 1 END) FROM offences o
                            LEFT JOIN (SELECT DISTINCT h3_10 FROM area_cells WHERE layer = ?) c ON c.h3_10 = o.h3_10
                            WHERE o.dataset = ? AND o.h3_10 IS NOT NULL""", [stored, dataset])
        return 0.0 if v is None or pd.isna(v) else float(v)

    return store.cached(("layer_cover", dataset, stored), compute)


def choose_layer(store: Store, dataset: str, requested: str | None = DISTRICTS) -> LayerChoice:
    """The stored layer a request for ``requested`` means on ``dataset`` (see the module docstring)."""
    requested = (requested or DISTRICTS).strip()
    name, own = split_layer(requested)
    if own is not None and own != dataset:
        raise NotStored(f"unknown area layer '{requested}': automatic layers belong to their own dataset "
                         f"(use '{name}' with dataset={own})")
    if name in AUTO_LAYERS:
        stored = auto_layer(name, dataset)
        if not _layer_exists(store, stored):
            raise NotStored(f"unknown area layer '{name}' for dataset '{dataset}': it is built from the records' "
                             "LSOA names (data.police.uk) or a mapped district column, and this dataset has neither")
        return LayerChoice(stored, name, "automatic", True, f"automatic '{name}' layer: {AUTO_LAYERS[name]} "
                           "(approximate outlines)")
    if requested == DISTRICTS:
        lad = auto_layer("lad", dataset)
        if _layer_exists(store, DISTRICTS):
            share = coverage_share(store, dataset, DISTRICTS)
            if share >= COVER_SHARE or not _layer_exists(store, lad):
                rule = f"loaded 'districts' layer ({100 * share:.1f}% of the dataset's records fall in it)"
                return LayerChoice(DISTRICTS, DISTRICTS, "loaded", False, rule)
            return LayerChoice(lad, "lad", "automatic", True,
                               f"automatic 'lad' layer (districts named from the records' LSOA names, approximate "
                               f"outlines): the loaded 'districts' layer holds only {100 * share:.1f}% of this "
                               "dataset's records")
        if _layer_exists(store, lad):
            return LayerChoice(lad, "lad", "automatic", True, "automatic 'lad' layer (districts named from the "
                               "records' LSOA names, approximate outlines): no 'districts' layer is loaded")
        raise NotStored(f"no area layer 'districts' is loaded and dataset '{dataset}' has no automatic districts "
                         f"(no LSOA names or district column); layers: {public_layers(store, dataset)}")
    if not _layer_exists(store, requested) or requested == DATASET_LAYER:
        raise NotStored(f"no area layer '{requested}' is loaded; layers for dataset '{dataset}': "
                         f"{public_layers(store, dataset)}")
    share = coverage_share(store, dataset, requested)
    return LayerChoice(requested, requested, "loaded", False,
                       f"loaded '{requested}' layer ({100 * share:.1f}% of the dataset's records fall in it)")


def public_layers(store: Store, dataset: str | None = None) -> list[str]:
    """Layer names a request may use: loaded layers, and the automatic ones of ``dataset``."""
    names = store.query_df("SELECT DISTINCT layer FROM areas ORDER BY layer")["layer"].tolist()
    out = []
    for n in names:
        base, own = split_layer(n)
        if n == DATASET_LAYER:
            continue
        if own is None:
            out.append(n)
        elif own == dataset:
            out.append(base)
    return sorted(set(out))


def resolve_area(store: Store, spec: str, dataset: str | None) -> tuple[str, list[str], str]:
    """``layer:id-or-name`` or a bare name -> (stored layer, feature ids, label), knowing ``dataset``'s automatic
    layers: ``lad:Charnwood``; ``districts:Charnwood`` on a dataset whose districts are automatic; ``Charnwood``
    searched in the loaded layers and the dataset's own automatic layers."""
    if dataset is None:
        return store.resolve_area(spec)
    layer, _, key = spec.partition(":") if ":" in spec else ("", "", spec)
    key = key.strip()
    if layer:
        choice = choose_layer(store, dataset, layer)
        hits = _find(store, [choice.stored], key)
        if hits.empty and layer == DISTRICTS and choice.stored == DISTRICTS and _layer_exists(store, auto_layer("lad", dataset)):
            hits = _find(store, [auto_layer("lad", dataset)], key)
        if hits.empty:
            raise NotStored(f"unknown area '{spec}': no feature '{key}' in layer '{choice.name}' "
                             f"({choice.rule}); give layer:feature_id or a feature name")
        return str(hits.layer.iloc[0]), hits.feature_id.astype(str).tolist(), spec
    candidates = [n for n in store.query_df("SELECT DISTINCT layer FROM areas")["layer"].tolist()
                  if n != DATASET_LAYER and split_layer(n)[1] in (None, dataset)]
    # the dataset's own districts first when the loaded ones do not cover it
    order = sorted(candidates, key=lambda n: (0 if n == district_layer_stored(store, dataset) else 1, n))
    for n in order:
        hits = _find(store, [n], key)
        if not hits.empty:
            return n, hits.feature_id.astype(str).tolist(), spec
    for n in order:  # a district name selects all its features (e.g. every ward in Southend)
        hits = store.query_df("SELECT layer, feature_id FROM areas WHERE layer = ? AND lower(district) = lower(?)",
                              [n, key])
        if not hits.empty:
            return n, hits.feature_id.astype(str).tolist(), spec
    raise NotStored(f"unknown area '{spec}': give layer:feature_id, a feature name or a district name "
                     f"(layers: {public_layers(store, dataset)})")


def district_layer_stored(store: Store, dataset: str) -> str | None:
    try:
        return choose_layer(store, dataset, DISTRICTS).stored
    except StoreError:
        return None


def _find(store: Store, layers: list[str], key: str) -> pd.DataFrame:
    ph = ",".join("?" * len(layers))
    return store.query_df(f"""SELECT layer, feature_id, name FROM areas WHERE layer IN ({ph})
                              AND (feature_id = ? OR lower(name) = lower(?))""", [*layers, key, key])


def layer_listing(store: Store, dataset: str | None = None) -> dict:
    """GET /areas: every loaded layer (features, fields, source) and, for ``dataset``, its automatic layers and
    the patrol-area (district) layer its requests use."""
    store.ensure_schema(META_SCHEMA)
    counts = store.query_df(f"""SELECT layer, count(*) AS features FROM areas WHERE layer <> '{DATASET_LAYER}'
                                GROUP BY layer ORDER BY layer""")
    meta = store.query_df("SELECT * FROM area_layer_meta").set_index("layer")
    layers = []
    for r in counts.itertuples(index=False):
        base, own = split_layer(r.layer)
        if own is not None and own != dataset:
            continue
        m = meta.loc[r.layer] if r.layer in meta.index else None
        entry = {"name": base, "kind": "automatic" if own else "loaded", "features": int(r.features),
                 "dataset": own, "approximate": bool(own) or bool(m is not None and m["approximate"])}
        if m is not None:
            entry.update({"source": m["source"], "name_field": _none(m["name_field"]), "id_field": _none(m["id_field"]),
                          "district_field": _none(m["district_field"]), "note": _none(m["note"]),
                          "loaded_at": None if pd.isna(m["loaded_at"]) else pd.Timestamp(m["loaded_at"]).isoformat()})
        layers.append(entry)
    out: dict = {"layers": layers}
    if dataset is not None:
        store.require_dataset(dataset)
        try:
            out["district_layer"] = choose_layer(store, dataset, DISTRICTS).to_dict()
        except StoreError as exc:
            out["district_layer"] = None
            out["district_layer_problem"] = str(exc)
    return out


def _none(v):
    return None if v is None or (isinstance(v, float) and pd.isna(v)) else v


def layer_rule_dict(choice: LayerChoice) -> dict:
    return asdict(choice)


__all__ = ["COVER_SHARE", "DISTRICTS", "LayerChoice", "SEPARATOR", "choose_layer", "coverage_share",
           "district_layer_stored", "layer_cells", "layer_listing", "public_layers", "resolve_area"]
