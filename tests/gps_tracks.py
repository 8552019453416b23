"""Constructed officer tracks with known stays, for the GPS dosage tests.

One unit drives at 30 km/h along a street running east through four spots 1.5 km apart (H3 res-10 cells):
it stays 20 minutes at A, drives straight through B without stopping, stays 20 minutes at C, stops 4 minutes
at D and drives on. Pings are taken every ``interval`` seconds from the continuous track, with 5 m of GPS
noise; ``drop`` removes pings (e.g. the one in the middle of the stay at C).
"""
from __future__ import annotations

from dataclasses import dataclass

import h3
import numpy as np
import pandas as pd

LAT0, LON0 = 52.6369, -1.1398  # Leicester
M_LAT = 1 / 111_195.0
M_LON = 1 / (111_195.0 * np.cos(np.radians(LAT0)))
SPEED = 30 / 3.6  # m/s
START = pd.Timestamp("2024-05-08 10:00")  # UK local time (BST)


def point(east_m: float, north_m: float = 0.0) -> tuple[float, float]:
    return LON0 + east_m * M_LON, LAT0 + north_m * M_LAT


A, B, C, D = point(0), point(1500), point(3000), point(4500)
SPOT_POINTS = {"A": A, "B": B, "C": C, "D": D}


def spot_cells(res: int = 10) -> dict[str, str]:
    return {k: h3.latlng_to_cell(p[1], p[0], res) for k, p in SPOT_POINTS.items()}


def spots_frame(res: int = 10) -> pd.DataFrame:
    cells = spot_cells(res)
    return pd.DataFrame({"spot_id": ["HS-" + c for c in cells.values()], "h3": list(cells.values()),
                         "rank": [1, 2, 3, 4], "area_name": ["West", "West", "East", "East"],
                         "lat": [p[1] for p in SPOT_POINTS.values()], "lon": [p[0] for p in SPOT_POINTS.values()]})


@dataclass
class Track:
    times: np.ndarray  # waypoint seconds
    lon: np.ndarray
    lat: np.ndarray
    stays: dict[str, tuple[float, float]]  # spot -> (arrive s, leave s)

    def pings(self, interval: float, unit: str = "Alpha 1", drop: tuple[int, ...] = (), seed: int = 1,
              start: pd.Timestamp = START) -> pd.DataFrame:
        t = np.arange(0, self.times[-1], interval)
        t = t[~np.isin(np.arange(len(t)), drop)]
        rng = np.random.default_rng(seed)
        lon = np.interp(t, self.times, self.lon) + rng.normal(0, 5, len(t)) * M_LON
        lat = np.interp(t, self.times, self.lat) + rng.normal(0, 5, len(t)) * M_LAT
        ts = start + pd.to_timedelta(t, unit="s")
        return pd.DataFrame({"unit": unit, "timestamp": ts.strftime("%Y-%m-%dT%H:%M:%S"), "lon": lon.round(7),
                             "lat": lat.round(7), "t": t})

    def ping_index_at(self, interval: float, seconds: float) -> int:
        return int(np.argmin(np.abs(np.arange(0, self.times[-1], interval) - seconds)))

    def middle_of(self, spot: str) -> float:
        return sum(self.stays[spot]) / 2


def street_track(stay_a: float = 20, stay_c: float = 20, stop_d: float = 4) -> Track:
    wp: list[tuple[float, tuple[float, float]]] = [(0.0, point(-1500))]
    stays: dict[str, tuple[float, float]] = {}

    def go(to):
        t, p = wp[-1]
        wp.append((t + np.hypot((to[0] - p[0]) / M_LON, (to[1] - p[1]) / M_LAT) / SPEED, to))

    def stay(name, minutes):
        t, p = wp[-1]
        wp.append((t + minutes * 60, p))
        stays[name] = (t, t + minutes * 60)

    go(A), stay("A", stay_a), go(C), stay("C", stay_c), go(D), stay("D", stop_d), go(point(6000))
    return Track(np.array([w[0] for w in wp]), np.array([w[1][0] for w in wp]), np.array([w[1][1] for w in wp]),
                 stays)


def to_csv(frame: pd.DataFrame) -> str:
    return frame.drop(columns=["t"], errors="ignore").to_csv(index=False)


def parked_track(lon0: float, lat0: float, minutes: float, start: pd.Timestamp, unit: str = "Car 7",
                 interval: float = 30, seed: int = 3) -> str:
    """CSV of a unit driving 1.5 km east at 30 km/h to (lon0, lat0), parking ``minutes`` there, driving on."""
    m_lon = 1 / (111_195.0 * np.cos(np.radians(lat0)))
    drive = 1500 / SPEED
    times = np.array([0, drive, drive + minutes * 60, 2 * drive + minutes * 60])
    xs = np.array([lon0 - 1500 * m_lon, lon0, lon0, lon0 + 1500 * m_lon])
    t = np.arange(0, times[-1], interval)
    rng = np.random.default_rng(seed)
    lon = np.interp(t, times, xs) + rng.normal(0, 5, len(t)) * m_lon
    lat = lat0 + rng.normal(0, 5, len(t)) / 111_195.0
    ts = start + pd.to_timedelta(t, unit="s")
    return pd.DataFrame({"unit": unit, "timestamp": ts.strftime("%Y-%m-%dT%H:%M:%S"), "lon": lon.round(7),
                         "lat": lat.round(7)}).to_csv(index=False)
