"""RTM numerics before and after a change, measured alternately in one window of the (shared) machine.

Run: ``nice .venv/bin/python -m bench.rtm_before_after --before 058eb64 --pairs 2``.  The *before* side is the
``rtm/`` package of a git ref (``git archive`` into a temporary directory; everything else -- geodata, the
harness, the data -- is this checkout's), the *after* side is this checkout's ``rtm/``.  Each side runs in a
fresh process: ``bench.bench_rtm`` (count and harm outcome, ``--no-write``) and, with ``--real``, the Southend
real run (``bench.rtm_real_run --district Southend-on-Sea --block-length 150 --grid square``, where the NB
wins by BIC).  The order alternates from pair to pair.  Per part, CPU seconds (process time) are summed by
wrapping ``rtm.run.screen`` (the elastic-net path with its spatial folds) and ``rtm.run.stepwise`` (with
weights: the bootstrap resamples; without: the selection, including the Tweedie power's reselection).  CPU
seconds are what to compare on a shared machine; wall seconds are printed too.  Prints markdown only.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REAL_ARGS = ["--district", "Southend-on-Sea", "--block-length", "150", "--grid", "square"]
PARTS = ("screening", "selection", "bootstrap")


def _child(side_root: str, which: str, bootstrap: int) -> None:
    """Run one benchmark with ``side_root``'s rtm package and print one JSON line per run_rtm call."""
    sys.path.insert(0, side_root)
    import rtm  # noqa: E402  (the side's package: imported before any bench module puts ROOT first)
    import rtm.run as run_mod

    if not Path(rtm.__file__).resolve().is_relative_to(Path(side_root).resolve()):
        raise SystemExit(f"rtm imported from {rtm.__file__}, not {side_root}")
    cur: dict[str, float] = {}

    def timed(name_of, fn):
        def wrapper(*a, **k):
            c = time.process_time()
            try:
                return fn(*a, **k)
            finally:
                part = name_of(k)
                cur[part] = cur.get(part, 0.0) + time.process_time() - c
        return wrapper

    run_mod.screen = timed(lambda k: "screening", run_mod.screen)
    run_mod.stepwise = timed(lambda k: "bootstrap" if k.get("w") is not None else "selection", run_mod.stepwise)
    records = []
    inner = rtm.run_rtm

    def run_rtm(crimes, layers, grid, config=None, **kw):
        cur.clear()
        t, c = time.perf_counter(), time.process_time()
        res = inner(crimes, layers, grid, config, **kw)
        rec = {"outcome": (config.outcome if config is not None else "count"),
               "wall": time.perf_counter() - t, "cpu": time.process_time() - c, **cur,
               "family": res.model["family"], "candidates": res.screening["candidates_kept"],
               "power": (res.model.get("dispersion") or {}).get("tweedie_power"),
               "rrv": {f"{r.factor}:{r.operationalisation}:{r.spatial_influence_m:g}": round(r.rrv, 4)
                       for r in res.factors}}
        records.append(rec)
        return res

    rtm.run_rtm = run_rtm  # the bench modules do `from rtm import run_rtm` at import
    if which == "synthetic":
        from bench import bench_rtm
        bench_rtm.main(["--no-write", "--bootstrap", str(bootstrap)])
    else:
        from bench import rtm_real_run
        rtm_real_run.main(["--no-write", "--bootstrap", str(bootstrap), *REAL_ARGS])
    for rec in records:
        rec["problem"] = "Southend NB" if which == "real" else f"synthetic {rec['outcome']}"
    print("@@" + json.dumps(records))


def _side_dir(ref: str, tmp: Path) -> Path:
    data = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "rtm"], check=True, capture_output=True).stdout
    with tarfile.open(fileobj=BytesIO(data)) as tar:
        tar.extractall(tmp, filter="data")
    return tmp


def _run_side(root: Path, which: str, bootstrap: int) -> list[dict]:
    out = subprocess.run([sys.executable, "-m", "bench.rtm_before_after", "--child", str(root), which,
                          "--bootstrap", str(bootstrap)], cwd=ROOT, check=True, capture_output=True, text=True,
                         env={**os.environ, "PYTHONWARNINGS": "ignore"})
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("@@"))
    return json.loads(line[2:])


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--before", default="058eb64", help="git ref whose rtm/ is the before side")
    ap.add_argument("--pairs", type=int, default=2)
    ap.add_argument("--bootstrap", type=int, default=20)
    ap.add_argument("--real", action="store_true", help="also the Southend real run (NB by BIC; ../shared/data)")
    ap.add_argument("--child", nargs=2, metavar=("ROOT", "WHICH"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        _child(args.child[0], args.child[1], args.bootstrap)
        return ""
    which = ["synthetic", *(["real"] if args.real else [])]
    rows: dict[str, dict[str, list[dict]]] = {}
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory(prefix="rtm-before-") as tmp:
        sides = {"before": _side_dir(args.before, Path(tmp)), "after": ROOT}
        for pair in range(args.pairs):
            order = ["before", "after"] if pair % 2 == 0 else ["after", "before"]
            for w in which:
                for side in order:
                    for rec in _run_side(sides[side], w, args.bootstrap):
                        rows.setdefault(rec["problem"], {}).setdefault(side, []).append(rec)
                    load.append(os.getloadavg()[0])
                    print(f"pair {pair + 1} {w} {side} done", file=sys.stderr, flush=True)
    ended = time.strftime("%H:%M UTC", time.gmtime())
    lines = [f"Before = `rtm/` at {args.before}, after = this checkout's; {args.pairs} alternating pairs, "
             f"{args.bootstrap} bootstrap resamples, {started}-{ended}, 1-min load average "
             f"{min(load):.1f}-{max(load):.1f}. CPU seconds (process time); median over pairs.", "",
             "| problem | part | before CPU s | after CPU s | after/before |", "|---|---|---:|---:|---:|"]
    same = []
    for prob, by in rows.items():
        for part in (*PARTS, "cpu", "wall"):
            b = statistics.median(r.get(part, 0.0) for r in by["before"])
            a = statistics.median(r.get(part, 0.0) for r in by["after"])
            label = {"cpu": "**run_rtm total CPU**", "wall": "run_rtm total wall (s)"}.get(part, part)
            lines.append(f"| {prob} | {label} | {b:.2f} | {a:.2f} | {a / b:.2f} |" if b else
                         f"| {prob} | {label} | {b:.2f} | {a:.2f} | - |")
        outs = {side: {json.dumps({k: r[k] for k in ("family", "candidates", "power", "rrv")}) for r in recs}
                for side, recs in by.items()}
        n = f"{len(by['before'])} before, {len(by['after'])} after"
        if len(outs["before"] | outs["after"]) == 1:
            same.append(f"- {prob}: identical in every run ({n}): {next(iter(outs['after']))}")
        else:
            same.append(f"- {prob}: DIFFER ({n}): after {sorted(outs['after'])}; before {sorted(outs['before'])}")
    lines += ["", "Outcomes (family, candidates kept, Tweedie power, RRVs to 4 decimals):", *same, ""]
    text = "\n".join(lines)
    print(text)
    return text


if __name__ == "__main__":
    main()
