"""Baseline for bench_proc: the seed tutorial's Monte Carlo pi (seeds/001,
"Monte Carle Method and Estimating Pi"), its find_pi as written,
Pool(P).map(find_pi, [N//P]*P) as its test.py does.

Usage: pi_pool.py N P REPS
The seed times the map alone on a started Pool (timeit around
p.map(...)); so does this, best of REPS. Prints one line:

    seconds <float> samples <int> pi <float>
"""
from random import random
from multiprocessing import Pool
import sys
import time


def find_pi(n):
    """
    Function to estimate the value of Pi
    """
    inside=0

    for i in range(0,n):
        x=random()
        y=random()
        if (x*x+y*y)**(0.5)<=1:  # if i falls inside the circle
            inside+=1

    pi=4*inside/n
    return pi


if __name__ == '__main__':
    N, P, reps = (int(a) for a in sys.argv[1:4])
    best = float('inf')
    with Pool(P) as p:
        for _ in range(reps):
            t0 = time.perf_counter()
            pi = sum(p.map(find_pi, [N//P]*P))/P
            best = min(best, time.perf_counter() - t0)
    print("seconds {0:.5f} samples {1} pi {2:.7f}".format(best, (N//P)*P, pi))
