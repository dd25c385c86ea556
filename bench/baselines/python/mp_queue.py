"""Baseline for bench_queue: multiprocessing.Queue moving 8-byte items.

Usage: mp_queue.py ITEMS PRODUCERS CONSUMERS
Each producer puts ITEMS/PRODUCERS ints, each consumer gets ITEMS/CONSUMERS;
prints one line: "items_per_s <float> checksum <int>".
"""
import multiprocessing as mp
import sys
import time


def produce(q, start, n, go):
    go.wait()
    for i in range(start, start + n):
        q.put(i)


def consume(q, n, out, go):
    go.wait()
    total = 0
    for _ in range(n):
        total += q.get()
    out.put(total)


def main():
    items, producers, consumers = (int(a) for a in sys.argv[1:4])
    per_p, per_c = items // producers, items // consumers
    items = per_p * producers
    q, out = mp.Queue(), mp.Queue()
    go = mp.Event()
    procs = [mp.Process(target=produce, args=(q, p * per_p, per_p, go)) for p in range(producers)]
    procs += [mp.Process(target=consume, args=(q, per_c, out, go)) for _ in range(consumers)]
    for p in procs:
        p.start()
    t0 = time.perf_counter()
    go.set()
    checksum = sum(out.get() for _ in range(consumers))
    elapsed = time.perf_counter() - t0
    for p in procs:
        p.join()
    print(f"items_per_s {items / elapsed:.1f} checksum {checksum}")


if __name__ == "__main__":
    mp.set_start_method("fork")
    main()
