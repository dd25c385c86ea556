"""Baseline for bench_proc: multiprocessing.Pool(WORKERS).map over N tiny
tasks (x*x on ints), with chunksize=1 and with Pool.map's default chunksize.

Usage: pool_map.py WORKERS N REPS
The Pool is started (and warmed up with one small map) before timing; each
map is timed alone, best of REPS, the two kinds interleaved. Prints one line:

    chunksize1 <seconds> default <seconds> default_chunksize <int> checksum <int>

(the default chunksize is the one Pool.map computes: ceil(N / (4 * WORKERS));
checksum is the sum of the squares, the same for both runs, for checking).
"""
from multiprocessing import Pool
import sys
import time


def square(x):
    return x * x


if __name__ == '__main__':
    workers, n, reps = (int(a) for a in sys.argv[1:4])
    data = list(range(n))
    want = sum(x * x for x in data)
    best1 = best_default = float('inf')
    with Pool(workers) as p:
        p.map(square, range(1000))
        for _ in range(reps):
            t0 = time.perf_counter()
            r1 = p.map(square, data, chunksize=1)
            best1 = min(best1, time.perf_counter() - t0)
            t0 = time.perf_counter()
            r2 = p.map(square, data)
            best_default = min(best_default, time.perf_counter() - t0)
            if sum(r1) != want or sum(r2) != want:
                sys.exit("pool_map.py: wrong result")
    chunksize, extra = divmod(n, workers * 4)
    if extra:
        chunksize += 1
    print("chunksize1 {0:.6f} default {1:.6f} default_chunksize {2} checksum {3}".format(
        best1, best_default, chunksize, want))
