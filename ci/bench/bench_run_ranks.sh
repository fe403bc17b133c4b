#!/usr/bin/env bash
# How contprobe run's own host-side cost grows with the ranks of a launch on one node:
# ci/bench/bench_run.sh at RANKS = 1, 2, 4, 8 (Hydra, mpich.sif), with its per-phase profile.
#
#   bash ci/bench/bench_run_ranks.sh      # RANKS_LIST="1 2 4 8" N=3 IMG=.../mpich.sif MARK="mpi or allreduce"
#
# Prints, per rank count, the medians of: the bare launch (the exact launch.json argv and environment,
# i.e. the launcher, the containers and the probes' own work), `contprobe run`, their difference
# (contprobe's own cost), and the phases of a profiled run: planning, staging, collect + merge, render.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
IMAGES=${CONTPROBE_IMAGES:-/var/tmp/contprobe-images}
# The MPI probes only by default: contprobe's own cost does not depend on which probes run, and the
# full suite (torch, horovod) makes every 8-rank round minutes of waiting on a 2-core machine.
export IMG=${IMG:-$IMAGES/mpich.sif} N=${N:-3} PROFILE=1 PROFILE_K=${PROFILE_K:-3} MARK=${MARK-mpi or allreduce} \
    RUN_EXTRA=${RUN_EXTRA---allreduce-sizes 1048576}
for r in ${RANKS_LIST:-1 2 4 8}; do
    RANKS=$r WORK="${WORK:-/tmp/contprobe-bench-run}-$r" bash "$REPO/ci/bench/bench_run.sh" \
        | grep -E '^## contprobe run|^\| (floor|`contprobe run|contprobe.s own|planning|harness|collect|render|launch:|host checks|cli.main)|^ratio' \
        | sed "s/^/[ranks $r] /"
done
