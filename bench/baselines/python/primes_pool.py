"""Baseline for bench_pool: the seed tutorial's multiprocessing example
(seeds/001, "Multiprocessing for parallel execution of tasks"), its
sum_prime and is_prime as written, Pool(WORKERS).map over the targets.

Usage: primes_pool.py WORKERS TARGET...
Times the Pool's start, the map and the Pool's exit, as the seed does;
prints one line: "seconds <float> sums <int> <int> ...".
"""
from multiprocessing import Pool
import sys
import time


def sum_prime(num):

    sum_of_primes = 0

    ix = 2

    while ix <= num:
        if is_prime(ix):
            sum_of_primes += ix
        ix += 1

    return sum_of_primes


def is_prime(num):
    if num <= 1:
        return False
    elif num <= 3:
        return True
    elif num % 2 == 0 or num % 3 == 0:
        return False
    i = 5
    while i * i <= num:
        if num % i == 0 or num % (i + 2) == 0:
            return False
        i += 6
    return True


if __name__ == '__main__':
    workers = int(sys.argv[1])
    targets = [int(a) for a in sys.argv[2:]]

    start = time.time()
    with Pool(workers) as p:
        sums = p.map(sum_prime, targets)
    elapsed = time.time() - start
    print("seconds {0:.5f} sums {1}".format(elapsed, " ".join(str(s) for s in sums)))
