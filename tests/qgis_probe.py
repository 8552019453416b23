"""Run by Debian's /usr/bin/python3 with python3-qgis (QGIS 3.22), QT_QPA_PLATFORM=offscreen: load every
collection of a running harmspot through QGIS's own OAPIF provider, read its features, export the harm-spots
layer to a GeoPackage, and print what QGIS saw as JSON (tests/test_gis_clients.py reads it).

    python3 tests/qgis_probe.py http://127.0.0.1:PORT/ OUT_DIR
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def main(url: str, out_dir: str) -> dict:
    from qgis.core import (QgsApplication, QgsCoordinateTransformContext, QgsVectorFileWriter, QgsVectorLayer,
                           QgsWkbTypes)

    QgsApplication.setPrefixPath("/usr", True)
    app = QgsApplication([], False)
    app.initQgis()
    report: dict = {"qgis": None, "layers": {}, "export": None}
    try:
        from qgis.core import Qgis

        report["qgis"] = Qgis.QGIS_VERSION
        import urllib.request

        with urllib.request.urlopen(url.rstrip("/") + "/collections?f=json", timeout=60) as r:
            collections = json.loads(r.read())["collections"]
        for c in collections:
            layer = QgsVectorLayer(f"url='{url}' typename='{c['id']}'", c["id"], "OAPIF")
            entry: dict = {"valid": layer.isValid()}
            if layer.isValid():
                feats = list(layer.getFeatures())
                names = [f.name() for f in layer.fields()]
                entry.update({
                    "features": len(feats), "fields": names,
                    "field_types": {f.name(): f.typeName() for f in layer.fields()},
                    "geometry": QgsWkbTypes.displayString(layer.wkbType()),
                    "geometry_types": sorted({QgsWkbTypes.displayString(f.geometry().wkbType()) for f in feats
                                              if f.hasGeometry()}),
                    "title": layer.metadata().title(), "abstract": layer.metadata().abstract(),
                    "null_counts": {n: sum(1 for f in feats if f[n] is None or str(f[n]) == "NULL") for n in names},
                    "sample": {n: str(feats[0][n]) for n in names} if feats else {},
                })
            report["layers"][c["id"]] = entry
            if c["id"] == "harm-spots" and layer.isValid():
                target = str(Path(out_dir) / "harm-spots-qgis.gpkg")
                opts = QgsVectorFileWriter.SaveVectorOptions()
                opts.driverName = "GPKG"
                res = QgsVectorFileWriter.writeAsVectorFormatV3(layer, target, QgsCoordinateTransformContext(), opts)
                code, message = res[0], res[1]
                back = QgsVectorLayer(target, "back", "ogr")
                report["export"] = {"code": int(code), "message": message, "path": target, "valid": back.isValid(),
                                    "features": back.featureCount() if back.isValid() else None}
    except Exception as exc:  # report it rather than die without output
        report["error"] = f"{type(exc).__name__}: {exc}"
    return report


if __name__ == "__main__":
    import os

    print(json.dumps(main(sys.argv[1], sys.argv[2])), flush=True)
    os._exit(0)  # QGIS 3.22's teardown can segfault offscreen; everything needed is printed
