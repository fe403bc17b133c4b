"""mpi4py Allreduce timing loop, comparable with `IMB-MPI1 Allreduce` and nccl-tests.

    mpiexec -n 2 python ci/bench/allreduce_loop.py --msglog 3:26

Per message size (bytes, float32 elements, MPI.SUM, separate send/recv numpy buffers, like IMB's
default non-in-place Allreduce): warm-up iterations, a barrier, then N timed iterations. Each rank's
time is its average per iteration; t_min/t_max/t_avg are taken over ranks (as IMB does), and
bandwidths follow nccl-tests' definitions from t_avg:
    algbw = bytes / t_avg            (GB/s, 1 GB = 1e9 bytes)
    busbw = algbw * 2 * (n - 1) / n  (n = number of ranks)
The result of each size is checked (ranks contribute rank+1, so every element must be n(n+1)/2).
Rank 0 prints the table; --json FILE also writes the figures as JSON.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import List

import numpy as np
from mpi4py import MPI


def parse_msglog(text: str) -> List[int]:
    lo, _, hi = text.partition(":")
    lo_i, hi_i = (int(lo), int(hi)) if hi else (0, int(lo))
    return [1 << k for k in range(lo_i, hi_i + 1)]


def iterations(nbytes: int, max_iter: int, overall_vol: int, min_iter: int) -> int:
    """IMB-style: at most max_iter, at most overall_vol bytes moved per size, at least min_iter."""
    return max(min_iter, min(max_iter, overall_vol // max(nbytes, 1)))


def main(argv: List[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--msglog", default="3:26", help="log2 of min:max message size in bytes (default 3:26)")
    ap.add_argument("--max-iter", type=int, default=1000, help="iterations per size, at most (default 1000)")
    ap.add_argument("--overall-vol", type=int, default=256 << 20,
                    help="bytes per size, at most, that set the iteration count (default 256 MiB)")
    ap.add_argument("--min-iter", type=int, default=5, help="iterations per size, at least (default 5)")
    ap.add_argument("--warmup", type=int, default=0, help="warm-up iterations (default: iterations/10, >= 2)")
    ap.add_argument("--json", help="also write the figures to this file (rank 0)")
    args = ap.parse_args(argv)

    comm = MPI.COMM_WORLD
    rank, n = comm.Get_rank(), comm.Get_size()
    sizes = [s for s in parse_msglog(args.msglog) if s >= 4]  # whole float32 elements
    expected = n * (n + 1) / 2.0
    rows = []
    if rank == 0:
        print("# mpi4py %s, numpy %s, %s" % (
            __import__("mpi4py").__version__, np.__version__, MPI.Get_library_version().splitlines()[0].strip()))
        print("# Allreduce float32 sum, %d ranks; algbw = bytes/t_avg, busbw = algbw*2(n-1)/n, GB = 1e9 B" % n)
        print("%12s %12s %8s %12s %12s %12s %12s %12s" % (
            "#bytes", "count", "iters", "t_min[usec]", "t_max[usec]", "t_avg[usec]", "algbw[GB/s]", "busbw[GB/s]"))
        sys.stdout.flush()
    for nbytes in sizes:
        count = nbytes // 4
        send = np.full(count, rank + 1.0, dtype=np.float32)
        recv = np.zeros(count, dtype=np.float32)
        iters = iterations(nbytes, args.max_iter, args.overall_vol, args.min_iter)
        warm = args.warmup or max(2, iters // 10)
        for _ in range(warm):
            comm.Allreduce(send, recv, op=MPI.SUM)
        if not np.all(recv == expected):
            raise SystemExit("rank %d: wrong Allreduce result at %d bytes: %r" % (rank, nbytes, recv[:4]))
        comm.Barrier()
        t0 = MPI.Wtime()
        for _ in range(iters):
            comm.Allreduce(send, recv, op=MPI.SUM)
        t = (MPI.Wtime() - t0) / iters
        t_min = comm.reduce(t, op=MPI.MIN, root=0)
        t_max = comm.reduce(t, op=MPI.MAX, root=0)
        t_sum = comm.reduce(t, op=MPI.SUM, root=0)
        if rank == 0:
            t_avg = t_sum / n
            algbw = nbytes / t_avg / 1e9
            busbw = algbw * 2.0 * (n - 1) / n
            rows.append({"bytes": nbytes, "count": count, "iters": iters, "t_min_us": t_min * 1e6,
                         "t_max_us": t_max * 1e6, "t_avg_us": t_avg * 1e6, "algbw_GBps": algbw,
                         "busbw_GBps": busbw})
            print("%12d %12d %8d %12.2f %12.2f %12.2f %12.3f %12.3f" % (
                nbytes, count, iters, t_min * 1e6, t_max * 1e6, t_avg * 1e6, algbw, busbw))
            sys.stdout.flush()
    if rank == 0 and args.json:
        with open(args.json, "w") as f:
            json.dump({"ranks": n, "library": MPI.Get_library_version().splitlines()[0].strip(),
                       "dtype": "float32", "op": "sum", "results": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
