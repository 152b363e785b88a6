"""City → region → station → EV hierarchy and scale-out (R6.1.2, R6.2.3.2, R6.2.3.3; issue 5).

- :mod:`optev.hierarchy.regions` — split a city into regions (feeders or substation subtrees);
- :mod:`optev.hierarchy.city` — citywide targets shared out to regions;
- :mod:`optev.hierarchy.station` — per-EV station problems against the region's plan;
- :mod:`optev.hierarchy.services` — grid services shared out to regions (issue 12);
- :mod:`optev.hierarchy.executor` — serial, local-process and Dask executors;
- :mod:`optev.hierarchy.solve` — :func:`solve_hierarchical`, :class:`HierarchicalStrategy`.
"""

from optev.hierarchy.city import CityTarget
from optev.hierarchy.executor import DaskExecutor, Executor, LocalProcessExecutor, SerialExecutor
from optev.hierarchy.regions import Region, region_instance, split_regions
from optev.hierarchy.solve import HierarchicalResult, HierarchicalStrategy, RegionSolution, solve_hierarchical

__all__ = ["CityTarget", "DaskExecutor", "Executor", "HierarchicalResult", "HierarchicalStrategy",
           "LocalProcessExecutor", "Region", "RegionSolution", "SerialExecutor", "region_instance",
           "solve_hierarchical", "split_regions"]
