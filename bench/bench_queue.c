/* bench_queue: a CREW_SHARED crew_queue of 8-byte items between processes,
 * against the same items through a pipe(2) (one write and one read per item)
 * and through Python's multiprocessing.Queue, all in the same run.
 *
 * Figures (items per second, best of several runs; the ratio is crew's rate
 * over the baseline's, > 1 = crew faster):
 *   1 producer / 1 consumer and 2 / 2, each party a forked process.
 * The crew queue lives in a MAP_SHARED mapping made before the fork
 * (crew_queue_init). Consumers sum what they get; a wrong sum fails the run.
 * Speed is printed, never asserted.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <crew.h>

#ifndef CREW_BENCH_BUILD_TYPE
#define CREW_BENCH_BUILD_TYPE "unknown"
#endif
#ifndef CREW_BENCH_PYDIR
#define CREW_BENCH_PYDIR "bench/baselines/python"
#endif

#define CAPACITY 1024

static int failures;

typedef struct shared {
    crew_barrier start;          /* every party and the parent */
    _Atomic uint64_t sum;        /* what consumers got, added up */
    _Alignas(64) unsigned char queue[];
} shared;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint64_t expected_sum(long items) { return (uint64_t)items * (uint64_t)(items - 1) / 2; }

static void reap_all(int n) {
    for (int i = 0; i < n; i++) {
        int st;
        if (wait(&st) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) failures++;
    }
}

/* ------------------------------------------------------------ crew queue */

static double run_crew(long items, int producers, int consumers) {
    crew_queue_options qo = {.item_size = 8, .capacity = CAPACITY, .flags = CREW_SHARED};
    size_t size = sizeof(shared) + crew_queue_footprint(&qo);
    shared *sh = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (sh == MAP_FAILED) return 0;
    crew_queue *q;
    crew_barrier_init(&sh->start, (unsigned)(producers + consumers + 1),
                      &(crew_barrier_options){.flags = CREW_SHARED});
    if (crew_queue_init(&q, sh->queue, size - sizeof(shared), &qo) != 0) {
        failures++;
        return 0;
    }
    long per_p = items / producers, per_c = items / consumers;
    for (int p = 0; p < producers; p++) {
        if (fork() == 0) {
            crew_barrier_wait(&sh->start, CREW_FOREVER);
            for (uint64_t v = (uint64_t)(p * per_p); v < (uint64_t)((p + 1) * per_p); v++)
                if (crew_queue_put(q, &v, CREW_FOREVER) != 0) _exit(1);
            _exit(0);
        }
    }
    for (int c = 0; c < consumers; c++) {
        if (fork() == 0) {
            uint64_t v, sum = 0;
            crew_barrier_wait(&sh->start, CREW_FOREVER);
            for (long i = 0; i < per_c; i++) {
                if (crew_queue_get(q, &v, CREW_FOREVER) != 0) _exit(1);
                sum += v;
            }
            atomic_fetch_add(&sh->sum, sum);
            _exit(0);
        }
    }
    crew_barrier_wait(&sh->start, CREW_FOREVER);
    double t0 = now_s();
    reap_all(producers + consumers);
    double elapsed = now_s() - t0;
    if (atomic_load(&sh->sum) != expected_sum(items)) {
        fprintf(stderr, "bench_queue: crew queue sum wrong\n");
        failures++;
    }
    crew_queue_destroy(q);
    munmap(sh, size);
    return (double)items / elapsed;
}

/* ----------------------------------------------------------------- pipe */

static double run_pipe(long items, int producers, int consumers) {
    int fds[2];
    shared *sh = mmap(NULL, sizeof(shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (sh == MAP_FAILED || pipe(fds) != 0) return 0;
    crew_barrier_init(&sh->start, (unsigned)(producers + consumers + 1),
                      &(crew_barrier_options){.flags = CREW_SHARED});
    long per_p = items / producers, per_c = items / consumers;
    for (int p = 0; p < producers; p++) {
        if (fork() == 0) {
            close(fds[0]);
            crew_barrier_wait(&sh->start, CREW_FOREVER);
            for (uint64_t v = (uint64_t)(p * per_p); v < (uint64_t)((p + 1) * per_p); v++)
                if (write(fds[1], &v, sizeof v) != sizeof v) _exit(1);
            _exit(0);
        }
    }
    for (int c = 0; c < consumers; c++) {
        if (fork() == 0) {
            close(fds[1]);
            uint64_t v, sum = 0;
            crew_barrier_wait(&sh->start, CREW_FOREVER);
            /* Every write is 8 bytes and atomic (< PIPE_BUF), so the pipe
             * always holds whole items and an 8-byte read gets one. */
            for (long i = 0; i < per_c; i++) {
                if (read(fds[0], &v, sizeof v) != sizeof v) _exit(1);
                sum += v;
            }
            atomic_fetch_add(&sh->sum, sum);
            _exit(0);
        }
    }
    close(fds[0]);
    close(fds[1]);
    crew_barrier_wait(&sh->start, CREW_FOREVER);
    double t0 = now_s();
    reap_all(producers + consumers);
    double elapsed = now_s() - t0;
    if (atomic_load(&sh->sum) != expected_sum(items)) {
        fprintf(stderr, "bench_queue: pipe sum wrong\n");
        failures++;
    }
    munmap(sh, sizeof(shared));
    return (double)items / elapsed;
}

/* --------------------------------------------------------------- python */

/* Items per second of multiprocessing.Queue, or 0 if Python is missing. */
static double run_python(long items, int producers, int consumers) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "python3 '%s/mp_queue.py' %ld %d %d 2>/dev/null", CREW_BENCH_PYDIR, items,
             producers, consumers);
    FILE *f = popen(cmd, "r");
    if (!f) return 0;
    double rate = 0;
    unsigned long long checksum = 0;
    int n = fscanf(f, "items_per_s %lf checksum %llu", &rate, &checksum);
    pclose(f);
    if (n != 2) return 0;
    if (checksum != expected_sum(items / producers * producers)) {
        fprintf(stderr, "bench_queue: python checksum wrong\n");
        failures++;
    }
    return rate;
}

static double best_of(int reps, double (*run)(long, int, int), long items, int p, int c) {
    double best = 0;
    for (int i = 0; i < reps; i++) {
        double r = run(items, p, c);
        if (r > best) best = r;
    }
    return best;
}

int main(int argc, char **argv) {
    bool quick = argc > 1 && strcmp(argv[1], "--quick") == 0;
    long items = quick ? 1000000 : 10000000;
    long py_items = quick ? 50000 : 300000;
    int reps = quick ? 2 : 3;
    alarm(600);
    printf("bench_queue: crew %s, %d cpu(s), build type %s, %s run, best of %d\n", crew_version(),
           crew_cpu_count(), CREW_BENCH_BUILD_TYPE, quick ? "quick" : "full", reps);
    printf("shared queue (capacity %d, 8-byte items) between processes, items/s; ratio > 1 = crew faster\n",
           CAPACITY);
    int configs[2][2] = {{1, 1}, {2, 2}};
    for (int i = 0; i < 2; i++) {
        int p = configs[i][0], c = configs[i][1];
        double crew = 0, pipe_rate = 0;
        for (int r = 0; r < reps; r++) { /* interleaved, so both see the same noise */
            double a = run_crew(items, p, c), b = run_pipe(items, p, c);
            if (a > crew) crew = a;
            if (b > pipe_rate) pipe_rate = b;
        }
        double py = best_of(1, run_python, py_items, p, c);
        printf("queue %dP/%dC: crew %.2f M items/s (target >= 10), pipe(2) %.2f M items/s, ratio %.2fx", p, c,
               crew / 1e6, pipe_rate / 1e6, crew / pipe_rate);
        if (py > 0) {
            printf("; python mp.Queue %.3f M items/s, ratio %.0fx\n", py / 1e6, crew / py);
        } else {
            printf("; python mp.Queue: python3 not found, skipped\n");
        }
        fflush(stdout);
    }
    return failures ? 1 : 0;
}
