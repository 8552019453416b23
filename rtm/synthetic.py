"""Synthetic study areas with planted risk factors, for tests and the benchmark."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import shapely

from geodata.cells import bng_to_lonlat
from geodata.layers import PointLayer
from rtm.features import Variable, build_features
from rtm.grid import Grid, h3_grid

CENTRE_BNG = (570_000.0, 206_000.0)  # near Chelmsford, Essex


@dataclass
class Synthetic:
    grid: Grid
    layers: list[PointLayer]
    crimes: pd.DataFrame
    planted: dict[str, float]  # variable key -> RRV
    base_rate: float
    severity: dict[str, float] | None = None  # variable key -> harm-per-offence multiplier


def box_area(cells: int, resolution: int = 10, centre=CENTRE_BNG) -> shapely.Geometry:
    """A square WGS84 polygon holding about ``cells`` H3 cells of the resolution."""
    import h3

    side = np.sqrt(cells * h3.average_hexagon_area(resolution, unit="m^2"))
    x0, y0 = centre[0] - side / 2, centre[1] - side / 2
    xs = np.array([x0, x0 + side, x0 + side, x0, x0])
    ys = np.array([y0, y0, y0 + side, y0 + side, y0])
    lon, lat = bng_to_lonlat(xs, ys)
    return shapely.Polygon(np.column_stack([lon, lat]))


def random_layer(rng, name: str, n: int, bounds, clusters: int = 0, spread: float = 300.0,
                 type: str | None = None) -> PointLayer:
    minx, miny, maxx, maxy = bounds
    if clusters:
        cx = rng.uniform(minx, maxx, clusters)
        cy = rng.uniform(miny, maxy, clusters)
        k = rng.integers(0, clusters, n)
        x = cx[k] + rng.normal(0, spread, n)
        y = cy[k] + rng.normal(0, spread, n)
    else:
        x = rng.uniform(minx, maxx, n)
        y = rng.uniform(miny, maxy, n)
    return PointLayer.from_xy(name, type or name, x, y)


def make(cells: int = 8000, layers: dict[str, dict] | None = None, planted: dict[str, float] | None = None,
         base_rate: float = 0.15, months: int = 12, seed: int = 0, resolution: int = 10,
         negbin_alpha: float = 0.0, severity: dict[str, float] | None = None, harm_mean: float = 30.0,
         harm_shape: float = 0.8) -> Synthetic:
    """Grid + random layers + offences drawn from Poisson (or NB) counts with the planted RRVs.

    layers: name -> {"n": points, "clusters": k, "spread": m}; planted: "layer:kind:distance" -> RRV.
    Offence counts are for the whole ``months`` span, spread uniformly over the months.
    severity: "layer:kind:distance" -> multiplier of the mean harm per offence (offences there are more harmful,
    not more frequent).  When given, each offence's harm is Gamma(harm_shape) with mean harm_mean x the
    multipliers present, so expected harm per cell = rate x severity: the harm RRV of a factor is its count RRV
    times its severity multiplier.  Without it, harm is drawn from {1, 10, 365} days regardless of place.
    """
    rng = np.random.default_rng(seed)
    grid = h3_grid(box_area(cells, resolution), resolution)
    b = (grid.x.min() - 500, grid.y.min() - 500, grid.x.max() + 500, grid.y.max() + 500)
    layers = layers or {"bar": {"n": 150, "clusters": 20, "spread": 250},
                        "station": {"n": 40},
                        "school": {"n": 80},
                        "takeaway": {"n": 200, "clusters": 25, "spread": 300}}
    lays = [random_layer(rng, name, spec["n"], b, spec.get("clusters", 0), spec.get("spread", 300.0))
            for name, spec in layers.items()]
    planted = planted or {"bar:proximity:100": 3.0, "takeaway:density:200": 2.0}
    eta = np.full(len(grid), np.log(base_rate))
    by_name = {lay.name: lay for lay in lays}
    for key, rrv in planted.items():
        name, kind, dist = key.split(":")
        fm = build_features(grid.x, grid.y, [by_name[name]], (float(dist),), (kind,))
        col = fm.column(Variable(name, kind, float(dist)).key)
        eta += np.log(rrv) * col
    mu = np.exp(eta)
    if negbin_alpha > 0:
        mu = rng.gamma(1 / negbin_alpha, negbin_alpha * mu)
    counts = rng.poisson(mu)
    cell = np.repeat(np.arange(len(grid)), counts)
    month = rng.integers(0, months, len(cell))
    dates = pd.Timestamp("2023-01-01") + pd.to_timedelta(0, "D")
    occurred = pd.DatetimeIndex([dates]).repeat(len(cell)).to_period("M").to_timestamp()
    occurred = pd.to_datetime(pd.Series(occurred)).dt.to_period("M").dt.to_timestamp()
    occurred = (pd.PeriodIndex(pd.Series(["2023-01"] * len(cell)), freq="M") + month).to_timestamp()
    if severity:
        sev = np.full(len(grid), float(harm_mean))
        for key, mult in severity.items():
            name, kind, dist = key.split(":")
            fm = build_features(grid.x, grid.y, [by_name[name]], (float(dist),), (kind,))
            sev *= np.where(fm.column(Variable(name, kind, float(dist)).key) > 0, mult, 1.0)
        harm = rng.gamma(harm_shape, sev[cell] / harm_shape)
    else:
        harm = rng.choice([1.0, 10.0, 365.0], len(cell), p=[0.7, 0.25, 0.05])
    crimes = pd.DataFrame({"x": grid.x[cell], "y": grid.y[cell], "lon": grid.lon[cell], "lat": grid.lat[cell],
                           "occurred_from": occurred, "harm": harm})
    if grid.resolution is not None:
        crimes[f"h3_{grid.resolution}"] = grid.ids[cell]
    return Synthetic(grid=grid, layers=lays, crimes=crimes, planted=planted, base_rate=base_rate,
                     severity=severity)
