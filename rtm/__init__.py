"""Risk Terrain Modelling (Caplan & Kennedy; RTMDx-style), as a plain library.

Entry points: :func:`run_rtm` (offences + point layers + grid -> :class:`RTMResult`), :func:`h3_grid`,
:func:`square_grid`, :func:`cells_table`, :func:`cells_geojson`.  Layers come from
:func:`geodata.layers.load_layer`.  Never imports ``app``.
"""
from rtm.features import DEFAULT_DISTANCES, OPERATIONALISATIONS, FeatureMatrix, Variable, build_features
from rtm.grid import DEFAULT_RESOLUTION, Grid, GridError, h3_grid, h3_grid_from_cells, square_grid
from rtm.run import (CLASS_LABELS, FactorRow, PriorityPlace, RTMConfig, RTMResult, cells_geojson, cells_table,
                     run_rtm)

__all__ = ["run_rtm", "RTMConfig", "RTMResult", "FactorRow", "PriorityPlace", "cells_table", "cells_geojson",
           "h3_grid", "h3_grid_from_cells", "square_grid", "Grid", "GridError", "DEFAULT_RESOLUTION",
           "build_features", "FeatureMatrix", "Variable", "DEFAULT_DISTANCES", "OPERATIONALISATIONS",
           "CLASS_LABELS"]
