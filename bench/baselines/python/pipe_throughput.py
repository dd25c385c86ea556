"""Baseline for bench_conn: multiprocessing.Pipe moving byte messages.

Usage: pipe_throughput.py SIZE COUNT REPS

A forked child receives COUNT messages of SIZE bytes (recv_bytes) from a
duplex Pipe and answers with the number of bytes it got; the parent times
from its first send_bytes to that answer, as bench_conn times crew. Prints
one line, the best of REPS runs:

    pipe_throughput size <int> count <int> msgs_per_s <float> mb_per_s <float> bytes <int>

(MB = 10^6 bytes of payload; `bytes` is what the child counted, for checking.)
"""
import multiprocessing as mp
import sys
import time


def receive(conn, count):
    conn.send_bytes(b"r")  # ready: the child is running
    total = 0
    for _ in range(count):
        total += len(conn.recv_bytes())
    conn.send_bytes(str(total).encode())
    conn.close()


def one_run(size, count):
    parent, child = mp.Pipe()
    proc = mp.Process(target=receive, args=(child, count))
    proc.start()
    child.close()
    parent.recv_bytes()
    msg = bytes(size)
    t0 = time.perf_counter()
    for _ in range(count):
        parent.send_bytes(msg)
    total = int(parent.recv_bytes())
    elapsed = time.perf_counter() - t0
    proc.join()
    parent.close()
    return elapsed, total


def main():
    size, count, reps = (int(a) for a in sys.argv[1:4])
    best, total = None, 0
    for _ in range(reps):
        elapsed, total = one_run(size, count)
        if best is None or elapsed < best:
            best = elapsed
    print(f"pipe_throughput size {size} count {count} msgs_per_s {count / best:.1f} "
          f"mb_per_s {count * size / best / 1e6:.1f} bytes {total}")


if __name__ == "__main__":
    mp.set_start_method("fork")
    main()
