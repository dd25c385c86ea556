/* bench_proc: crew's process pool (CREW_PROCESSES) against its thread pool,
 * a single loop and Python's multiprocessing.Pool, all in the same run.
 *
 * Figures (ratio = crew's time over the baseline's, < 1 = crew faster):
 *   tasks     per-task cost: 100,000 tiny tasks (x*x on int64) on 2 worker
 *             processes: crew_pool_map with chunk_size 1 and with the
 *             default (0, adaptive), and crew_pool_submit one future per
 *             item (each submit is one call into a child: the per-task round
 *             trip; the map also with arrays in the arena, nothing copied),
 *             against multiprocessing.Pool(2).map with chunksize=1
 *             and with its default chunksize (baselines/python/pool_map.py).
 *             crew's chunk_size is the smallest piece a worker takes: the
 *             adaptive splitter may hand a worker several chunks in one
 *             call, so a map with chunk_size 1 is not one round trip per
 *             item; the submit figure is.
 *   pi        Monte Carlo pi, 10^9 samples (--quick: 10^8) of one Philox
 *             stream, crew_pool_reduce on the process pool against the same
 *             on the thread pool (both must count the same samples inside),
 *             and against the seed's Python (find_pi under
 *             Pool(P).map(find_pi, [N//P]*P), baselines/python/pi_pool.py)
 *             run on 10^7 samples (--quick 10^6) and compared per sample.
 *   multiply  the seed's shared-array multiply, z[i] = x[i] * y[i] over 16
 *             million doubles: crew_pool_map over (x, y) pairs on the
 *             process pool with arrays in the arena (crew_shm_alloc: nothing
 *             copied) and with malloc'd arrays (copied through the arena),
 *             the same map on the thread pool, crew_pool_for over the arena
 *             arrays (the seed's own shape: workers writing into shared
 *             arrays) on both pools, and a single loop.
 *   recovery  a task reports its worker's pid through arena memory and
 *             waits; the bench SIGKILLs that pid and times until the task's
 *             future fails with CREW_EWORKERDIED, and until the next task
 *             has completed on the replacement worker (best and median).
 * Each figure is the best of several runs, versions interleaved run by run,
 * with a pause after each parallel run. Speed is printed, never asserted;
 * the program exits 1 only when a result is wrong or a call fails.
 *
 * usage: bench_proc [--quick] [--workers N] [tasks|pi|multiply|recovery]...
 *   (--workers: the pools of pi and multiply, default crew_cpu_count(); the
 *   tasks figure always uses 2 workers, as the issue's, and recovery 2)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <crew.h>

#include "bench_cli.h"

#include "pool_bodies.h"


#define PAUSE_S 0.1 /* after each parallel run */
#define PI_SEED 20261122u
#define TASK_WORKERS 2
#define TASK_N 100000
#define MUL_N (16u * 1000u * 1000u) /* the seed's ROWS * COLS */

static int failures;
static int workers; /* pi and multiply pools */
static int cpus;

static void fail(const char *what, int rc) {
    fprintf(stderr, "bench_proc: %s: %s\n", what, rc < 0 ? crew_strerror(rc) : "wrong result");
    failures++;
}

static void settle(void) { crew_sleep(PAUSE_S); }

static double min_d(double a, double b) { return a < b ? a : b; }

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static crew_pool *make_pool(crew_pool_kind kind, int n, const char *name) {
    crew_pool *p = NULL;
    int rc = crew_pool_create(&p, &(crew_pool_options){.kind = kind, .workers = (size_t)n, .name = name});
    if (rc != 0) {
        fail(kind == CREW_PROCESSES ? "crew_pool_create (processes)" : "crew_pool_create (threads)", rc);
        return NULL;
    }
    return p;
}

/* ----------------------------------------------------------------- tasks */

static int square_task(const void *in, void *out, void *ctx) {
    (void)ctx;
    int64_t x = *(const int64_t *)in;
    *(int64_t *)out = x * x;
    return 0;
}

static bool check_squares(const int64_t *out, size_t n, const char *who) {
    for (size_t i = 0; i < n; i++) {
        if (out[i] != (int64_t)i * (int64_t)i) {
            fprintf(stderr, "bench_proc: %s: out[%zu] = %lld\n", who, i, (long long)out[i]);
            failures++;
            return false;
        }
    }
    return true;
}

static double crew_map_squares(crew_pool *p, const int64_t *in, int64_t *out, size_t n, size_t chunk) {
    memset(out, 0xff, n * sizeof *out);
    crew_map m = {.fn = square_task, .in = in, .in_size = sizeof *in, .out = out, .out_size = sizeof *out,
                  .count = n, .chunk_size = chunk};
    double t0 = crew_now();
    int rc = crew_pool_map(p, &m);
    double t = crew_now() - t0;
    if (rc != 0)
        fail("crew_pool_map (squares)", rc);
    check_squares(out, n, chunk ? "map chunk_size 1" : "map chunk_size 0");
    settle();
    return t;
}

/* One crew_pool_submit per item, wait for all, get each result, free. */
static double crew_submit_squares(crew_pool *p, const int64_t *in, int64_t *out, size_t n, crew_future **futs) {
    memset(out, 0xff, n * sizeof *out);
    size_t made = 0;
    int rc = 0;
    double t0 = crew_now();
    for (; made < n; made++) {
        crew_task t = {.fn = square_task, .in = &in[made], .in_size = sizeof *in, .out_size = sizeof *out};
        rc = crew_pool_submit(p, &t, &futs[made]);
        if (rc != 0)
            break;
    }
    if (rc == 0) {
        int done = crew_future_wait(futs, n, CREW_ALL_COMPLETED, CREW_FOREVER);
        if (done < 0)
            rc = done;
    }
    for (size_t i = 0; i < made; i++) {
        if (rc == 0) {
            int r = crew_future_get(futs[i], &out[i], 0);
            if (r != 0)
                rc = r;
        }
        crew_future_free(futs[i]);
    }
    double t = crew_now() - t0;
    if (rc != 0)
        fail("crew_pool_submit (squares)", rc);
    check_squares(out, n, "submit");
    settle();
    return t;
}

/* Latency: submit one task, get it, free it, m times in a row (one task in
 * flight at a time). */
static double crew_submit_serial(crew_pool *p, const int64_t *in, size_t m) {
    int rc = 0;
    double t0 = crew_now();
    for (size_t i = 0; i < m && rc == 0; i++) {
        crew_task t = {.fn = square_task, .in = &in[i], .in_size = sizeof *in, .out_size = sizeof(int64_t)};
        crew_future *f;
        int64_t v = -1;
        rc = crew_pool_submit(p, &t, &f);
        if (rc == 0) {
            rc = crew_future_get(f, &v, CREW_FOREVER);
            crew_future_free(f);
            if (rc == 0 && v != (int64_t)i * (int64_t)i)
                rc = 1;
        }
    }
    double t = crew_now() - t0;
    if (rc != 0)
        fail("crew_pool_submit + get, one at a time", rc);
    settle();
    return t;
}

/* Python's Pool(w).map, chunksize 1 and default: seconds, or false. */
static bool run_python_map(int w, size_t n, int reps, double *one, double *dflt, long *dflt_chunk) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "python3 '%s/pool_map.py' %d %zu %d 2>/dev/null", CREW_BENCH_PYDIR, w, n, reps);
    FILE *f = popen(cmd, "r");
    if (!f)
        return false;
    unsigned long long sum = 0;
    int k = fscanf(f, "chunksize1 %lf default %lf default_chunksize %ld checksum %llu", one, dflt, dflt_chunk, &sum);
    pclose(f);
    if (k != 4)
        return false;
    unsigned long long want = 0;
    for (size_t i = 0; i < n; i++)
        want += (unsigned long long)i * i;
    if (sum != want) {
        fprintf(stderr, "bench_proc: python pool_map checksum wrong: %llu\n", sum);
        failures++;
    }
    return true;
}

static void bench_tasks(bool quick) {
    size_t n = TASK_N;
    int reps = quick ? 3 : 5, py_reps = quick ? 1 : 3;
    int64_t *in = malloc(n * sizeof *in), *out = malloc(n * sizeof *out);
    int64_t *ain = crew_shm_alloc(n * sizeof *ain), *aout = crew_shm_alloc(n * sizeof *aout);
    crew_future **futs = malloc(n * sizeof *futs);
    crew_pool *p = make_pool(CREW_PROCESSES, TASK_WORKERS, "bproc");
    if (!in || !out || !ain || !aout || !futs || !p) {
        if (!in || !out || !ain || !aout || !futs)
            fail("allocating the arrays", CREW_ENOMEM);
        free(in), free(out), free(futs);
        crew_shm_free(ain), crew_shm_free(aout);
        crew_pool_free(p);
        return;
    }
    for (size_t i = 0; i < n; i++)
        in[i] = ain[i] = (int64_t)i;
    /* Warm up: children running, the arena's stages grown. */
    crew_map_squares(p, in, out, n, 1);
    crew_map_squares(p, in, out, n, 0);
    crew_map_squares(p, ain, aout, n, 0);
    crew_submit_squares(p, in, out, n / 10, futs);
    size_t m = quick ? 2000 : 10000;
    double one = 1e300, dflt = 1e300, arena = 1e300, sub = 1e300, lat = 1e300;
    for (int r = 0; r < reps; r++) {
        one = min_d(one, crew_map_squares(p, in, out, n, 1));
        dflt = min_d(dflt, crew_map_squares(p, in, out, n, 0));
        arena = min_d(arena, crew_map_squares(p, ain, aout, n, 0));
        sub = min_d(sub, crew_submit_squares(p, in, out, n, futs));
        lat = min_d(lat, crew_submit_serial(p, in, m));
    }
    crew_pool_free(p);
    free(in), free(out), free(futs);
    crew_shm_free(ain), crew_shm_free(aout);

    double us = 1e6 / (double)n;
    printf("tasks: %zu tiny tasks (x*x, int64 in and out, malloc'd arrays copied through the arena), "
           "%d worker processes, best of %d (python %d)\n",
           n, TASK_WORKERS, reps, py_reps);
    printf("  note: crew's chunk_size is the smallest piece a worker takes; the adaptive splitter may hand a "
           "worker several chunks in one call, so map with chunk_size 1 is not one round trip per item. "
           "submit is: one call into a child per task.\n");
    printf("  crew_pool_map chunk_size 1: %.2f ms, %.3f us/task (target <= 2 us)\n", one * 1e3, one * us);
    printf("  crew_pool_map chunk_size 0 (automatic): %.2f ms, %.3f us/task\n", dflt * 1e3, dflt * us);
    printf("  crew_pool_map chunk_size 0, arrays in the arena (nothing copied): %.2f ms, %.3f us/task\n",
           arena * 1e3, arena * us);
    printf("  crew_pool_submit, one future per item (submit all, wait ALL, get, free): %.2f ms, "
           "%.3f us/task round trip\n",
           sub * 1e3, sub * us);
    printf("  crew_pool_submit + crew_future_get one at a time (latency, %zu tasks): %.2f us/task\n", m,
           lat * 1e6 / (double)m);
    fflush(stdout);
    double py1, pyd;
    long pyc;
    if (run_python_map(TASK_WORKERS, n, py_reps, &py1, &pyd, &pyc)) {
        printf("  python Pool(%d).map chunksize=1: %.3f s, %.2f us/task\n", TASK_WORKERS, py1, py1 * us);
        printf("  python Pool(%d).map default chunksize (%ld): %.4f s, %.3f us/task\n", TASK_WORKERS, pyc, pyd,
               pyd * us);
        printf("  crew map chunk 0 vs python default: %.0fx faster (target >= 25x); with arena arrays %.0fx\n",
               pyd / dflt, pyd / arena);
        printf("  crew map chunk 1 vs python chunksize=1: %.0fx faster; vs python default: %.0fx faster\n",
               py1 / one, pyd / one);
        printf("  crew submit vs python chunksize=1 (both one round trip per task): %.1fx faster\n", py1 / sub);
    } else {
        printf("  python multiprocessing.Pool: python3 not found or failed, skipped\n");
    }
    fflush(stdout);
}

/* -------------------------------------------------------------------- pi */

static int pi_body(size_t b, size_t e, void *acc, void *ctx) {
    (void)ctx;
    *(uint64_t *)acc += bench_pi_count(PI_SEED, b, e);
    return 0;
}

static void add_u64(void *acc, const void *other, void *ctx) {
    (void)ctx;
    *(uint64_t *)acc += *(const uint64_t *)other;
}

static const uint64_t zero_u64 = 0;

static double crew_pi(crew_pool *p, size_t n, uint64_t *inside, const char *who) {
    crew_reduce red = {.begin = 0, .end = n, .body = pi_body, .combine = add_u64, .identity = &zero_u64,
                       .size = sizeof(uint64_t), .result = inside};
    double t0 = crew_now();
    int rc = crew_pool_reduce(p, &red);
    double t = crew_now() - t0;
    if (rc != 0)
        fail(who, rc);
    settle();
    return t;
}

/* Seconds of the seed's find_pi under Pool(w).map for n samples, or 0. */
static double run_python_pi(size_t n, int w, int reps, double *pi) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "python3 '%s/pi_pool.py' %zu %d %d 2>/dev/null", CREW_BENCH_PYDIR, n, w, reps);
    FILE *f = popen(cmd, "r");
    if (!f)
        return 0;
    double secs = 0;
    unsigned long long samples = 0;
    int k = fscanf(f, "seconds %lf samples %llu pi %lf", &secs, &samples, pi);
    pclose(f);
    return k == 3 ? secs : 0;
}

static void bench_pi(bool quick) {
    size_t n = quick ? 100000000 : 1000000000;
    size_t py_n = quick ? 1000000 : 10000000;
    int reps = quick ? 1 : 3, py_reps = quick ? 1 : 3;
    crew_pool *pp = make_pool(CREW_PROCESSES, workers, "bproc");
    crew_pool *tp = make_pool(CREW_THREADS, workers, "bthr");
    if (!pp || !tp) {
        crew_pool_free(pp), crew_pool_free(tp);
        return;
    }
    /* Warm up both. */
    uint64_t proc_in = 0, thr_in = 0;
    crew_pi(pp, n / 100, &proc_in, "crew_pool_reduce (pi, processes)");
    crew_pi(tp, n / 100, &thr_in, "crew_pool_reduce (pi, threads)");
    double proc_s = 1e300, thr_s = 1e300;
    for (int r = 0; r < reps; r++) { /* order alternated run by run */
        if (r % 2 == 0) {
            thr_s = min_d(thr_s, crew_pi(tp, n, &thr_in, "crew_pool_reduce (pi, threads)"));
            proc_s = min_d(proc_s, crew_pi(pp, n, &proc_in, "crew_pool_reduce (pi, processes)"));
        } else {
            proc_s = min_d(proc_s, crew_pi(pp, n, &proc_in, "crew_pool_reduce (pi, processes)"));
            thr_s = min_d(thr_s, crew_pi(tp, n, &thr_in, "crew_pool_reduce (pi, threads)"));
        }
    }
    crew_pool_free(pp);
    crew_pool_free(tp);
    printf("pi: %zu samples (2 Philox doubles each), crew_pool_reduce, grain automatic, %d workers, best of %d\n", n,
           workers, reps);
    printf("  inside: processes %llu, threads %llu (pi ~ %.6f) -> %s\n", (unsigned long long)proc_in,
           (unsigned long long)thr_in, 4.0 * (double)thr_in / (double)n,
           proc_in == thr_in ? "identical" : "MISMATCH");
    if (proc_in != thr_in)
        fail("pi counts differ between process and thread pools", 1);
    printf("  thread pool %.3f s (%.2f ns/sample)\n", thr_s, thr_s * 1e9 / (double)n);
    printf("  process pool %.3f s (%.2f ns/sample), ratio %.3fx the thread pool (target <= 1.05x)\n", proc_s,
           proc_s * 1e9 / (double)n, proc_s / thr_s);
    fflush(stdout);
    double py_pi = 0;
    double py = run_python_pi(py_n, workers, py_reps, &py_pi);
    if (py > 0) {
        double py_ns = py * 1e9 / (double)py_n;
        printf("  python, the seed's find_pi, Pool(%d).map(find_pi, [N//P]*P), N = %zu (not %zu: scaled per "
               "sample), best of %d: %.3f s (pi ~ %.5f), %.1f ns/sample, ~%.0f s for %zu\n",
               workers, py_n, n, py_reps, py, py_pi, py_ns, py_ns * (double)n * 1e-9, n);
        printf("  process pool vs python per sample: %.0fx faster (python's random() is Mersenne Twister, one "
               "double per call; crew's Philox)\n",
               py_ns / (proc_s * 1e9 / (double)n));
    } else {
        printf("  python multiprocessing.Pool: python3 not found or failed, skipped\n");
    }
    fflush(stdout);
}

/* -------------------------------------------------------------- multiply */

typedef struct xy {
    double x, y;
} xy;

typedef struct mul_arrays {
    const xy *in;
    double *z;
} mul_arrays;

static int mul_item(const void *in, void *out, void *ctx) {
    (void)ctx;
    const xy *p = in;
    *(double *)out = p->x * p->y;
    return 0;
}

static int mul_for(size_t b, size_t e, void *ctx) {
    const mul_arrays *a = ctx;
    const xy *in = a->in;
    double *z = a->z;
    for (size_t i = b; i < e; i++)
        z[i] = in[i].x * in[i].y;
    return 0;
}

enum { MUL_SERIAL, MUL_THR_MAP, MUL_THR_FOR, MUL_PROC_MAP_ARENA, MUL_PROC_FOR_ARENA, MUL_PROC_MAP_MALLOC, MUL_KINDS };

static const char *const mul_names[MUL_KINDS] = {
    "single loop (malloc'd arrays)",
    "thread pool, crew_pool_map over pairs (malloc'd arrays)",
    "thread pool, crew_pool_for (malloc'd arrays)",
    "process pool, crew_pool_map over pairs, arena arrays (zero copy)",
    "process pool, crew_pool_for, arena arrays (zero copy)",
    "process pool, crew_pool_map over pairs, malloc'd arrays (copied through the arena)",
};

typedef struct mul_setup {
    crew_pool *pp, *tp;
    mul_arrays heap;   /* malloc'd */
    mul_arrays *arena; /* the struct itself in the arena too: a child reads it */
    const double *want;
    size_t n;
} mul_setup;

static double run_mul(mul_setup *s, int kind) {
    bool in_arena = kind == MUL_PROC_MAP_ARENA || kind == MUL_PROC_FOR_ARENA;
    mul_arrays *a = in_arena ? s->arena : &s->heap;
    memset(a->z, 0xff, s->n * sizeof(double)); /* NaN: a skipped item shows */
    crew_map m = {.fn = mul_item, .in = a->in, .in_size = sizeof(xy), .out = a->z, .out_size = sizeof(double),
                  .count = s->n};
    crew_for f = {.begin = 0, .end = s->n, .body = mul_for, .ctx = a};
    int rc = 0;
    double t0 = crew_now();
    switch (kind) {
    case MUL_SERIAL:
        mul_for(0, s->n, a);
        break;
    case MUL_THR_MAP:
        rc = crew_pool_map(s->tp, &m);
        break;
    case MUL_THR_FOR:
        rc = crew_pool_for(s->tp, &f);
        break;
    case MUL_PROC_MAP_ARENA:
    case MUL_PROC_MAP_MALLOC:
        rc = crew_pool_map(s->pp, &m);
        break;
    case MUL_PROC_FOR_ARENA:
        rc = crew_pool_for(s->pp, &f);
        break;
    default:
        break;
    }
    double t = crew_now() - t0;
    if (rc != 0)
        fail(mul_names[kind], rc);
    if (memcmp(a->z, s->want, s->n * sizeof(double)) != 0) {
        fprintf(stderr, "bench_proc: multiply (%s): wrong products\n", mul_names[kind]);
        failures++;
    }
    if (kind != MUL_SERIAL)
        settle();
    return t;
}

static void bench_multiply(bool quick) {
    size_t n = MUL_N;
    int reps = quick ? 3 : 5;
    mul_setup s = {.n = n};
    xy *hin = malloc(n * sizeof *hin);
    double *hz = malloc(n * sizeof *hz), *want = malloc(n * sizeof *want);
    xy *ain = crew_shm_alloc(n * sizeof *ain);
    double *az = crew_shm_alloc(n * sizeof *az);
    s.arena = crew_shm_alloc(sizeof *s.arena);
    if (!hin || !hz || !want || !ain || !az || !s.arena) {
        fail("allocating the arrays", CREW_ENOMEM);
        goto out;
    }
    crew_rng r;
    crew_rng_init(&r, PI_SEED, 1);
    for (size_t i = 0; i < n; i++) { /* random.random(), as the seed fills X and Y */
        hin[i].x = crew_rng_uniform(&r);
        hin[i].y = crew_rng_uniform(&r);
        want[i] = hin[i].x * hin[i].y;
    }
    memcpy(ain, hin, n * sizeof *ain);
    memset(hz, 0, n * sizeof *hz);
    memset(az, 0, n * sizeof *az);
    s.heap = (mul_arrays){.in = hin, .z = hz};
    *s.arena = (mul_arrays){.in = ain, .z = az};
    s.want = want;
    s.pp = make_pool(CREW_PROCESSES, workers, "bproc");
    s.tp = make_pool(CREW_THREADS, workers, "bthr");
    if (!s.pp || !s.tp)
        goto out;
    for (int k = 0; k < MUL_KINDS; k++) /* warm up: stages grown, pages touched */
        run_mul(&s, k);
    double best[MUL_KINDS];
    for (int k = 0; k < MUL_KINDS; k++)
        best[k] = 1e300;
    for (int rep = 0; rep < reps; rep++)
        for (int k = 0; k < MUL_KINDS; k++)
            best[k] = min_d(best[k], run_mul(&s, k));
    printf("multiply: the seed's shared-array multiply, z[i] = x[i] * y[i], %zu doubles (x, y as pairs: %zu MB "
           "in, %zu MB out), %d workers, grain/chunk automatic, ms, best of %d; ratio = time / the single loop's\n",
           n, n * sizeof(xy) >> 20, n * sizeof(double) >> 20, workers, reps);
    for (int k = 0; k < MUL_KINDS; k++)
        printf("  %s: %.1f ms, %.2fx the single loop\n", mul_names[k], best[k] * 1e3, best[k] / best[MUL_SERIAL]);
    printf("  process map, arena vs malloc'd: %.2fx; process map (arena) vs thread map: %.2fx; process for (arena) "
           "vs thread for: %.2fx\n",
           best[MUL_PROC_MAP_ARENA] / best[MUL_PROC_MAP_MALLOC], best[MUL_PROC_MAP_ARENA] / best[MUL_THR_MAP],
           best[MUL_PROC_FOR_ARENA] / best[MUL_THR_FOR]);
    fflush(stdout);
out:
    crew_pool_free(s.pp);
    crew_pool_free(s.tp);
    free(hin), free(hz), free(want);
    crew_shm_free(ain), crew_shm_free(az), crew_shm_free(s.arena);
}

/* -------------------------------------------------------------- recovery */

typedef struct rec_shared {
    _Atomic int blocker_pid; /* the worker kept busy, so the next task goes to the replacement */
    _Atomic int release;
    _Atomic int victim_pid;
} rec_shared;

static int blocker_task(const void *in, void *out, void *ctx) {
    (void)in, (void)out;
    rec_shared *sh = ctx;
    atomic_store(&sh->blocker_pid, (int)getpid());
    while (!atomic_load(&sh->release))
        crew_sleep(0.0005);
    return 0;
}

static int victim_task(const void *in, void *out, void *ctx) {
    (void)in, (void)out;
    rec_shared *sh = ctx;
    atomic_store(&sh->victim_pid, (int)getpid());
    for (;;)
        pause(); /* until SIGKILL */
    return 0;
}

static int pid_task(const void *in, void *out, void *ctx) {
    (void)in, (void)ctx;
    *(int *)out = (int)getpid();
    return 0;
}

/* Wait (polling) until *v is non-zero; false after 10 s. */
static bool wait_nonzero(_Atomic int *v) {
    double end = crew_now() + 10.0;
    while (atomic_load(v) == 0) {
        if (crew_now() > end)
            return false;
        crew_sleep(0.0002);
    }
    return true;
}

static void bench_recovery(bool quick) {
    int reps = quick ? 3 : 9;
    rec_shared *sh = crew_shm_alloc(sizeof *sh);
    if (!sh) {
        fail("crew_shm_alloc", CREW_ENOMEM);
        return;
    }
    crew_pool *p = make_pool(CREW_PROCESSES, 2, "brec");
    if (!p) {
        crew_shm_free(sh);
        return;
    }
    crew_future *bf = NULL;
    int rc = crew_pool_submit(p, &(crew_task){.fn = blocker_task, .ctx = sh}, &bf);
    if (rc != 0 || !wait_nonzero(&sh->blocker_pid)) {
        fail("recovery: starting the blocker task", rc ? rc : 1);
        goto out;
    }
    double fail_t[16], next_t[16];
    int done = 0;
    for (int r = 0; r < reps; r++) {
        atomic_store(&sh->victim_pid, 0);
        crew_future *vf = NULL, *nf = NULL;
        rc = crew_pool_submit(p, &(crew_task){.fn = victim_task, .ctx = sh}, &vf);
        if (rc != 0 || !wait_nonzero(&sh->victim_pid)) {
            fail("recovery: starting the victim task", rc ? rc : 1);
            crew_future_free(vf);
            break;
        }
        int victim = atomic_load(&sh->victim_pid);
        crew_sleep(0.02); /* the worker thread is waiting on its child, as in real life */
        double t0 = crew_now();
        kill(victim, SIGKILL);
        rc = crew_future_get(vf, NULL, 10.0);
        double t1 = crew_now();
        crew_future_free(vf);
        if (rc != CREW_EWORKERDIED) {
            fprintf(stderr, "bench_proc: recovery: the killed task's future gave %d (%s), not CREW_EWORKERDIED\n", rc,
                    crew_strerror(rc));
            failures++;
            break;
        }
        int pid = 0;
        rc = crew_pool_submit(p, &(crew_task){.fn = pid_task, .out_size = sizeof(int)}, &nf);
        if (rc == 0)
            rc = crew_future_get(nf, &pid, 10.0);
        double t2 = crew_now();
        crew_future_free(nf);
        if (rc != 0 || pid == victim || pid == atomic_load(&sh->blocker_pid) || pid <= 0) {
            fprintf(stderr, "bench_proc: recovery: next task rc %d ran in pid %d (victim %d, blocker %d)\n", rc, pid,
                    victim, atomic_load(&sh->blocker_pid));
            failures++;
            break;
        }
        fail_t[done] = t1 - t0;
        next_t[done] = t2 - t0;
        done++;
        settle();
    }
    int last = 0;
    size_t deaths = crew_pool_worker_deaths(p, &last);
    if (deaths != (size_t)done || (done && last != -SIGKILL)) {
        fprintf(stderr, "bench_proc: recovery: worker_deaths %zu (last %d), expected %d (last %d)\n", deaths, last,
                done, -SIGKILL);
        failures++;
    }
    if (done > 0) {
        double sf[16], sn[16];
        memcpy(sf, fail_t, sizeof sf);
        memcpy(sn, next_t, sizeof sn);
        qsort(sf, (size_t)done, sizeof(double), cmp_d);
        qsort(sn, (size_t)done, sizeof(double), cmp_d);
        printf("recovery: SIGKILL to the worker process running a task (its pid reported through the arena), "
               "2 worker processes (the other kept busy), %d kills\n",
               done);
        printf("  kill -> the task's future fails with CREW_EWORKERDIED: best %.2f ms, median %.2f ms, worst %.2f ms\n",
               sf[0] * 1e3, sf[done / 2] * 1e3, sf[done - 1] * 1e3);
        printf("  kill -> the next task completed on the replacement worker: best %.2f ms, median %.2f ms, worst "
               "%.2f ms\n",
               sn[0] * 1e3, sn[done / 2] * 1e3, sn[done - 1] * 1e3);
        printf("  all runs (fail / next, ms):");
        for (int i = 0; i < done; i++)
            printf(" %.2f/%.2f", fail_t[i] * 1e3, next_t[i] * 1e3);
        printf("\n  crew_pool_worker_deaths %zu, last exit code %d (-SIGKILL = %d)\n", deaths, last, -SIGKILL);
        printf("  (python's Pool: a killed worker is replaced, but the task it held never completes: its "
               "map or get() waits forever)\n");
    }
    fflush(stdout);
out:
    atomic_store(&sh->release, 1);
    if (bf) {
        rc = crew_future_get(bf, NULL, 10.0);
        if (rc != 0)
            fail("recovery: the blocker task", rc);
        crew_future_free(bf);
    }
    crew_pool_free(p);
    crew_shm_free(sh);
}

/* ----------------------------------------------------------------- main */

static const char *const section_names[] = {"tasks", "pi", "multiply", "recovery"};
static void (*const sections[])(bool) = {bench_tasks, bench_pi, bench_multiply, bench_recovery};
#define NSECTIONS (sizeof sections / sizeof sections[0])

int main(int argc, char **argv) {
    bool quick = false, chosen[NSECTIONS] = {false};
    cpus = crew_cpu_count();
    workers = cpus;
    int end = bench_cli(argc, argv, "bench_proc", section_names, NSECTIONS, chosen, &quick, &workers);
    if (end >= 0) return end;
    alarm(quick ? 300 : 1200); /* a hang ends the run */

    printf("bench_proc: crew %s, %d cpu(s), %d worker(s) (tasks: %d), build type %s%s, %s run\n", crew_version(),
           cpus, workers, TASK_WORKERS, CREW_BENCH_BUILD_TYPE,
           strcmp(CREW_BENCH_BUILD_TYPE, "Debug") == 0 ? " (DEBUG: figures meaningless)" : "",
           quick ? "quick" : "full");
    double load1 = bench_load();
    if (load1 >= 0)
        printf("load average (1 min) at start: %.2f\n", load1);
    int rc = crew_shm_setup(NULL); /* the arena, before any pool forks */
    if (rc != 0) {
        fail("crew_shm_setup", rc);
        return 1;
    }
    fflush(stdout);

    for (size_t k = 0; k < NSECTIONS; k++)
        if (chosen[k])
            sections[k](quick);
    return failures ? 1 : 0;
}
