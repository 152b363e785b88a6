"""Integer codes of the event core (:mod:`optev.mobility.core`): station kinds, EV status,
event kinds with their priority at equal times, and control modes of a plugged EV."""

from __future__ import annotations

# station kinds
FCS, SCS, PRIVATE = 0, 1, 2
# EV status
PARKED, DRIVING, QUEUED, PLUGGED, STRANDED = 0, 1, 2, 3, 4
# event kinds, and their priority at equal times: limits free chargers before departures,
# which free chargers before arrivals
K_LIMIT, K_DEPART, K_ARR_FCS, K_ARR_DEST, K_START, K_STRAND = 0, 1, 2, 3, 4, 5
EVENT_PRIORITY = {K_LIMIT: 0, K_DEPART: 1, K_ARR_FCS: 2, K_ARR_DEST: 2, K_START: 2, K_STRAND: 2}
# control modes of a plugged EV
FREE, EV_SET, STATION_SET = 0, 1, 2
