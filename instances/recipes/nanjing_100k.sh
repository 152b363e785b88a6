#!/bin/sh
# Build the 100,000-EV Nanjing instance (R6.1.1, R6.1.3) from V2Sim's ux_Nanjing case.
#
#   sh instances/recipes/nanjing_100k.sh [OUT]
#
# OUT defaults to instances/nanjing_100k (git-ignored: the data is rebuilt, not committed).
# V2Sim's cases are read from $OPTEV_V2SIM, default ../shared/v2sim next to the repository.
# Real Nanjing road network (3,888 nodes), 315 FCS and 3,888 SCS at real charging-station
# locations (42,030 public chargers), 165-bus 35 kV grid; 100,000 EVs in the default mix
# (90,000 cars, 3,000 buses, 7,000 logistics vehicles), 50 % of the cars with a home
# charger, 10 % with a workplace charger, every bus and van with a depot charger; seed 1;
# the uncontrolled day's sessions are stored for the optimiser. Takes about 30 s and
# 1.5 GB on 2 cores (see benchmarks/README.md, "City fleet"); the same seed gives the same bytes.
set -eu
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
V2SIM=${OPTEV_V2SIM:-$ROOT/../shared/v2sim}
OUT=${1:-$ROOT/instances/nanjing_100k}
# the licence copied below is not optev's output: remove it, or optev generate refuses to replace OUT
rm -f "$OUT/LICENSE-V2Sim.txt"
optev generate --case "$V2SIM/ux_Nanjing" --evs 100000 --seed 1 \
    --mix car=0.9,bus=0.03,logistics=0.07 --v2g-share 0.3 --private-share 0.5 \
    --name nanjing_100k --out "$OUT"
cp "$V2SIM/LICENSE-V2Sim.txt" "$OUT/LICENSE-V2Sim.txt"
optev info "$OUT"
