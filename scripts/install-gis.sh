#!/usr/bin/env bash
# Install Debian's GDAL (gdal-bin: ogr2ogr 3.6 on Debian 12) and QGIS (python3-qgis: 3.22 on Debian 12) for the
# GIS-client tests (tests/test_gis_clients.py), when we may (root, apt available). Those tests skip (reported as
# skipped, with the reason) when this cannot be done.
set -u
if command -v ogr2ogr >/dev/null 2>&1 && /usr/bin/python3 -c "import qgis.core" >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "install-gis: not root or no apt-get; GDAL/QGIS client tests will be skipped"; exit 0
fi
(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gdal-bin python3-qgis >/dev/null) \
  || echo "install-gis: apt-get could not install gdal-bin/python3-qgis; GDAL/QGIS client tests will be skipped"
