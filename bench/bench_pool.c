/* bench_pool: crew's thread pool against OpenMP, oneTBB, serial C and
 * Python's multiprocessing.Pool, all in the same run.
 *
 * Figures (ratio = crew's time over the baseline's, < 1 = crew faster):
 *   empty task   ns per task, submitted and completed: crew from the main
 *                thread (submit N, crew_future_wait ALL, free) and nested (one
 *                task submits N to its own pool and waits for them), against
 *                OpenMP tasks (parallel + single + N x task + taskwait) and
 *                oneTBB's task_group (in a task_arena of as many threads).
 *   for          a[i] = 2i over 10^8 iterations: crew_pool_for against
 *                OpenMP parallel for, schedule(static) and (dynamic), and
 *                serial.
 *   pi           Monte Carlo with 10^9 samples (--quick: 10^8) drawn from one
 *                Philox stream (crew_rng): crew_pool_reduce against the
 *                serial loop and OpenMP's reduction(+:inside). Each range
 *                positions the stream at its first sample, so every version
 *                counts the same samples and must get the same count.
 *   primes       the seed's sums of primes <= 1, 2 and 3 million (is_prime
 *                as the seed writes it), each target's range split by
 *                crew_pool_reduce, against serial C, OpenMP, and the seed's
 *                own Python under multiprocessing.Pool (run by this program:
 *                baselines/python/primes_pool.py).
 * The OpenMP and TBB code lives in baselines/ (its own translation units, so
 * this file is not compiled with -fopenmp). Each figure is the best of
 * several runs, the versions interleaved run by run in a fixed order (serial,
 * crew, OpenMP, TBB) with a pause after each parallel run, so that no
 * runtime's threads still spin (OpenMP's and TBB's do for a while after a
 * region) while the next one is measured. Speed is printed, never asserted;
 * the program exits 1 only when a result is wrong or a call fails.
 *
 * usage: bench_pool [--quick] [--workers N] [empty|tree|for|pi|primes]...
 *   (sections named: only those run; none named: all of them)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <crew.h>

#include "bench_cli.h"

#include "baselines/pool_baselines.h"
#include "pool_bodies.h"

#ifndef CREW_BENCH_HAVE_OPENMP
#define CREW_BENCH_HAVE_OPENMP 0
#endif
#ifndef CREW_BENCH_HAVE_TBB
#define CREW_BENCH_HAVE_TBB 0
#endif

#define PAUSE_S 0.1         /* after each parallel run: other runtimes' spinning stops */
#define PI_SEED 20261122u
#define PI_OMP_BLOCK 65536  /* samples per OpenMP iteration (one stream position each) */
#define FOR_DYN_CHUNK 65536 /* OpenMP schedule(dynamic, chunk) of the for figure */
#define PRIMES_DYN_CHUNK 1024
#define NTARGETS 3

static int failures;
static crew_pool *pool;
static int workers;         /* crew pool workers = OpenMP threads = TBB arena */
static int cpus;
static bool have_tbb;

static void fail(const char *what, int rc) {
    fprintf(stderr, "bench_pool: %s: %s\n", what, rc < 0 ? crew_strerror(rc) : "wrong result");
    failures++;
}

static void settle(void) { crew_sleep(PAUSE_S); }

static double min_d(double a, double b) { return a < b ? a : b; }

/* Speed-up over serial and parallel efficiency (against the cores the
 * workers can use). */
static void print_speedup(double serial_s, double t) {
    int used = workers < cpus ? workers : cpus;
    printf(" (speed-up %.2fx, efficiency %.0f%%)", serial_s / t, 100.0 * serial_s / t / used);
}

/* ---------------------------------------------------------- empty tasks */

static int empty_task(const void *in, void *out, void *ctx) {
    (void)in, (void)out, (void)ctx;
    BENCH_EMPTY_BODY();
    return 0;
}

static const crew_task empty = {.fn = empty_task};

/* Submit n empty tasks to `p` into futs, wait for all, free them. */
static int spawn_and_wait(crew_pool *p, size_t n, crew_future **futs) {
    size_t made = 0;
    int rc = 0;
    for (; made < n; made++) {
        rc = crew_pool_submit(p, &empty, &futs[made]);
        if (rc != 0)
            break;
    }
    if (rc == 0) {
        int done = crew_future_wait(futs, n, CREW_ALL_COMPLETED, CREW_FOREVER);
        if (done < 0)
            rc = done;
        else if ((size_t)done != n)
            rc = 1;
    }
    for (size_t i = 0; i < made; i++)
        crew_future_free(futs[i]);
    return rc;
}

static double crew_empty_main(size_t n, crew_future **futs) {
    double t0 = crew_now();
    int rc = spawn_and_wait(pool, n, futs);
    double t = crew_now() - t0;
    if (rc != 0)
        fail("empty tasks from the main thread", rc);
    return t;
}

typedef struct spawn_ctx {
    size_t n;
    crew_future **futs;
} spawn_ctx;

static int spawner_task(const void *in, void *out, void *ctx) {
    (void)in, (void)out;
    spawn_ctx *s = ctx;
    crew_pool *self = crew_pool_current();
    if (self == NULL)
        return CREW_EINVAL;
    int rc = spawn_and_wait(self, s->n, s->futs);
    return rc > 0 ? CREW_EINVAL : rc;
}

/* Seconds to run fn(ctx) as one task of the pool (submit, get, free): the
 * nested figures, whose spawning thread is one of the workers, as
 * OpenMP's is one of its team. `what` names a failure. */
static double time_in_task(crew_task_fn fn, void *ctx, const char *what) {
    crew_task t = {.fn = fn, .ctx = ctx};
    crew_future *f;
    double t0 = crew_now();
    int rc = crew_pool_submit(pool, &t, &f);
    if (rc == 0) {
        rc = crew_future_get(f, NULL, CREW_FOREVER);
        crew_future_free(f);
    }
    double t1 = crew_now() - t0;
    if (rc != 0)
        fail(what, rc);
    return t1;
}

static double crew_empty_nested(size_t n, crew_future **futs) {
    spawn_ctx s = {.n = n, .futs = futs};
    return time_in_task(spawner_task, &s, "nested empty tasks");
}

/* The same N empty tasks through a crew_group: no future per task. */
static int empty_group_fn(void *arg) {
    (void)arg;
    BENCH_EMPTY_BODY();
    return 0;
}

static int group_spawn_and_wait(crew_pool *p, size_t n) {
    crew_group *g;
    int rc = crew_group_create(&g, p);
    if (rc != 0)
        return rc;
    for (size_t i = 0; i < n && rc == 0; i++)
        rc = crew_group_run(g, empty_group_fn, NULL);
    int wrc = crew_group_wait(g, CREW_FOREVER);
    crew_group_free(g);
    return rc != 0 ? rc : wrc;
}

static double crew_group_main(size_t n, crew_future **futs) {
    (void)futs;
    double t0 = crew_now();
    int rc = group_spawn_and_wait(pool, n);
    double t = crew_now() - t0;
    if (rc != 0)
        fail("group of empty tasks from the main thread", rc);
    return t;
}

static int group_spawner_task(const void *in, void *out, void *ctx) {
    (void)in, (void)out;
    crew_pool *self = crew_pool_current();
    return self ? group_spawn_and_wait(self, *(size_t *)ctx) : CREW_EINVAL;
}

static double crew_group_nested(size_t n, crew_future **futs) {
    (void)futs;
    return time_in_task(group_spawner_task, &n, "nested group of empty tasks");
}

/* ---- the baselines of the task figures */

typedef enum task_shape { TASKS_FLAT, TASKS_TREE } task_shape;

/* One timed run of OpenMP's and of TBB's version of a task figure (n tasks,
 * or a tree n levels deep), each followed by the pause; keep the best
 * times in *omp_s and *tbb_s. */
static void time_task_baselines(task_shape shape, size_t n, double *omp_s, double *tbb_s) {
    (void)shape, (void)n, (void)omp_s, (void)tbb_s;
#if CREW_BENCH_HAVE_OPENMP
    double t0 = crew_now();
    if (shape == TASKS_FLAT)
        omp_pool_empty_tasks(n, workers);
    else
        omp_pool_tree_tasks((int)n, workers);
    *omp_s = min_d(*omp_s, crew_now() - t0);
    settle();
#endif
#if CREW_BENCH_HAVE_TBB
    if (have_tbb) {
        double t1 = crew_now();
        if (shape == TASKS_FLAT)
            tbb_pool_empty_tasks(n);
        else
            tbb_pool_tree_tasks((int)n);
        *tbb_s = min_d(*tbb_s, crew_now() - t1);
        settle();
    }
#endif
}

/* "; openmp task X ns/task, ratio R; tbb ..." for a crew time, and the
 * end of the line. ns: nanoseconds per task per second of run. */
static void print_task_ratios(double crew_s, double ns, double omp_s, double tbb_s) {
    if (CREW_BENCH_HAVE_OPENMP)
        printf("; openmp task %.1f ns/task, ratio %.2fx", omp_s * ns, crew_s / omp_s);
    else
        printf("; openmp: not available");
    if (have_tbb)
        printf("; tbb task_group %.1f ns/task, ratio %.2fx", tbb_s * ns, crew_s / tbb_s);
    else
        printf("; tbb: not installed");
    printf("\n");
}

/* ---- a tree of tasks: every inner task adds its two children to the
 * group; nothing is throttled (a deque never holds more than about two
 * tasks per level), so this is the cost of the queue itself. */
static crew_group *tree_group;

static int tree_node(void *arg) {
    intptr_t depth = (intptr_t)arg;
    if (depth == 0) {
        BENCH_EMPTY_BODY();
        return 0;
    }
    int rc = crew_group_run(tree_group, tree_node, (void *)(depth - 1));
    return rc != 0 ? rc : crew_group_run(tree_group, tree_node, (void *)(depth - 1));
}

static int tree_root_task(const void *in, void *out, void *ctx) {
    (void)in, (void)out;
    crew_pool *self = crew_pool_current();
    if (self == NULL)
        return CREW_EINVAL;
    int rc = crew_group_create(&tree_group, self);
    if (rc != 0)
        return rc;
    rc = tree_node(ctx);
    int wrc = crew_group_wait(tree_group, CREW_FOREVER);
    crew_group_free(tree_group);
    return rc != 0 ? rc : wrc;
}

static double crew_tree(int depth) {
    return time_in_task(tree_root_task, (void *)(intptr_t)depth, "tree of tasks");
}

static void bench_tree(bool quick) {
    int depth = quick ? 17 : 20, reps = quick ? 3 : 5;
    size_t n = ((size_t)2 << depth) - 1;
    double crew_s = 1e300, omp_s = 1e300, tbb_s = 1e300;
    crew_tree(depth - 3); /* warm up */
    time_task_baselines(TASKS_TREE, (size_t)depth - 3, &omp_s, &tbb_s);
    omp_s = tbb_s = 1e300;
    for (int r = 0; r < reps; r++) {
        crew_s = min_d(crew_s, crew_tree(depth));
        settle();
        time_task_baselines(TASKS_TREE, (size_t)depth, &omp_s, &tbb_s);
    }
    printf("task tree, %zu tasks (each inner task spawns two), ns/task, best of %d; ratio = crew / baseline\n", n,
           reps);
    printf("  crew group (nested) %.1f ns/task", crew_s * (1e9 / (double)n));
    print_task_ratios(crew_s, 1e9 / (double)n, omp_s, tbb_s);
    fflush(stdout);
}

enum { EMPTY_GROUP_MAIN, EMPTY_GROUP_NESTED, EMPTY_SUBMIT_MAIN, EMPTY_SUBMIT_NESTED, EMPTY_CREW };

static void bench_empty(bool quick) {
    size_t n = quick ? 100000 : 1000000;
    int reps = quick ? 3 : 5;
    crew_future **futs = malloc(n * sizeof *futs);
    if (futs == NULL) {
        fail("malloc", CREW_ENOMEM);
        return;
    }
    static double (*const run[EMPTY_CREW])(size_t, crew_future **) = {crew_group_main, crew_group_nested,
                                                                      crew_empty_main, crew_empty_nested};
    static const char *what[EMPTY_CREW] = {
        "group, main thread: crew_group_run N, crew_group_wait",
        "group, nested: one task runs N in a group, waits",
        "submit, main thread: submit N, wait ALL, free the futures",
        "submit, nested: one task submits N to its pool, waits",
    };
    double crew_s[EMPTY_CREW], omp_s = 1e300, tbb_s = 1e300;
    /* Warm up: every runtime's threads started, allocators primed. */
    for (int k = 0; k < EMPTY_CREW; k++)
        run[k](n / 10, futs);
    time_task_baselines(TASKS_FLAT, n / 10, &omp_s, &tbb_s);
    omp_s = tbb_s = 1e300;
    for (int k = 0; k < EMPTY_CREW; k++)
        crew_s[k] = 1e300;
    for (int r = 0; r < reps; r++) {
        for (int k = 0; k < EMPTY_CREW; k++) {
            crew_s[k] = min_d(crew_s[k], run[k](n, futs));
            settle();
        }
        time_task_baselines(TASKS_FLAT, n, &omp_s, &tbb_s);
    }
    free(futs);
    double ns = 1e9 / (double)n;
    printf("empty task, %zu tasks, ns/task, best of %d; ratio = crew / baseline, target <= 1.0x\n", n, reps);
    printf("  (a group's task and OpenMP's and TBB's carry no result; a submitted one has a future)\n");
    for (int i = 0; i < EMPTY_CREW; i++) {
        printf("  crew %s: %.1f ns/task", what[i], crew_s[i] * ns);
        print_task_ratios(crew_s[i], ns, omp_s, tbb_s);
    }
    fflush(stdout);
}

/* ------------------------------------------------------------------ for */

static int for_body(size_t b, size_t e, void *ctx) {
    bench_for_body(ctx, b, e);
    return 0;
}

/* 0 if a[i] == 2i everywhere. */
static int check_for(const uint32_t *a, size_t n, const char *who) {
    for (size_t i = 0; i < n; i++) {
        if (a[i] != (uint32_t)i * 2u) {
            fprintf(stderr, "bench_pool: for (%s): a[%zu] = %u, not %u\n", who, i, a[i], (uint32_t)i * 2u);
            failures++;
            return -1;
        }
    }
    return 0;
}

enum { FOR_SERIAL, FOR_CREW, FOR_OMP_STATIC, FOR_OMP_DYNAMIC, FOR_KINDS };

static double run_for(int kind, uint32_t *a, size_t n) {
    static const char *names[FOR_KINDS] = {"serial", "crew", "openmp static", "openmp dynamic"};
    memset(a, 0xff, n * sizeof *a); /* never 2i: the check sees a skipped index */
    double t0 = crew_now();
    switch (kind) {
    case FOR_SERIAL:
        bench_for_body(a, 0, n);
        break;
    case FOR_CREW: {
        crew_for loop = {.begin = 0, .end = n, .body = for_body, .ctx = a};
        int rc = crew_pool_for(pool, &loop);
        if (rc != 0)
            fail("crew_pool_for", rc);
        break;
    }
#if CREW_BENCH_HAVE_OPENMP
    case FOR_OMP_STATIC:
        omp_pool_for_static(a, n, workers);
        break;
    case FOR_OMP_DYNAMIC:
        omp_pool_for_dynamic(a, n, workers, FOR_DYN_CHUNK);
        break;
#endif
    default:
        return 0;
    }
    double t = crew_now() - t0;
    check_for(a, n, names[kind]);
    if (kind != FOR_SERIAL)
        settle();
    return t;
}

static void bench_for(bool quick) {
    size_t n = 100000000;
    int reps = quick ? 2 : 5;
    uint32_t *a = malloc(n * sizeof *a);
    if (a == NULL) {
        fail("malloc", CREW_ENOMEM);
        return;
    }
    int kinds = CREW_BENCH_HAVE_OPENMP ? FOR_KINDS : FOR_OMP_STATIC;
    double best[FOR_KINDS] = {1e300, 1e300, 1e300, 1e300};
    for (int k = 0; k < kinds; k++) /* warm-up: pages mapped, threads started */
        run_for(k, a, n / 10);
    for (int r = 0; r < reps; r++)
        for (int k = 0; k < kinds; k++)
            best[k] = min_d(best[k], run_for(k, a, n));
    free(a);
    printf("for, a[i] = 2i (uint32) over %zu iterations, ms, best of %d; ratio = crew / baseline\n", n, reps);
    printf("  serial %.1f ms\n", best[FOR_SERIAL] * 1e3);
    printf("  crew_pool_for (grain automatic) %.1f ms", best[FOR_CREW] * 1e3);
    print_speedup(best[FOR_SERIAL], best[FOR_CREW]);
    printf("\n");
    if (!CREW_BENCH_HAVE_OPENMP) {
        printf("  openmp: not available\n");
    } else {
        printf("  openmp parallel for schedule(static) %.1f ms", best[FOR_OMP_STATIC] * 1e3);
        print_speedup(best[FOR_SERIAL], best[FOR_OMP_STATIC]);
        printf(", crew ratio %.2fx\n", best[FOR_CREW] / best[FOR_OMP_STATIC]);
        printf("  openmp parallel for schedule(dynamic, %d) %.1f ms", FOR_DYN_CHUNK, best[FOR_OMP_DYNAMIC] * 1e3);
        print_speedup(best[FOR_SERIAL], best[FOR_OMP_DYNAMIC]);
        printf(", crew ratio %.2fx\n", best[FOR_CREW] / best[FOR_OMP_DYNAMIC]);
    }
    fflush(stdout);
}

/* ------------------------------------------------------------------- pi */

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

static void bench_pi(bool quick) {
    size_t n = quick ? 100000000 : 1000000000;
    int reps = quick ? 1 : 3;
    double serial_s = 1e300, crew_s = 1e300, omp_s = 1e300;
    uint64_t serial_in = 0, crew_in = 0, omp_in = 0;
    for (int r = 0; r < reps; r++) {
        double t0 = crew_now();
        serial_in = bench_pi_count(PI_SEED, 0, n);
        serial_s = min_d(serial_s, crew_now() - t0);

        crew_reduce red = {.begin = 0, .end = n, .body = pi_body, .combine = add_u64,
                           .identity = &zero_u64, .size = sizeof(uint64_t), .result = &crew_in};
        t0 = crew_now();
        int rc = crew_pool_reduce(pool, &red);
        crew_s = min_d(crew_s, crew_now() - t0);
        if (rc != 0)
            fail("crew_pool_reduce (pi)", rc);
        settle();
#if CREW_BENCH_HAVE_OPENMP
        t0 = crew_now();
        omp_in = omp_pool_pi(PI_SEED, n, PI_OMP_BLOCK, workers);
        omp_s = min_d(omp_s, crew_now() - t0);
        settle();
#endif
    }
    printf("pi, %zu samples (2 Philox doubles each), s, best of %d; ratio = crew / baseline\n", n, reps);
    printf("  inside: serial %llu (pi ~ %.6f), crew %llu, openmp %s%llu -> %s\n", (unsigned long long)serial_in,
           4.0 * (double)serial_in / (double)n, (unsigned long long)crew_in,
           CREW_BENCH_HAVE_OPENMP ? "" : "(not run) ", (unsigned long long)omp_in,
           crew_in == serial_in && (!CREW_BENCH_HAVE_OPENMP || omp_in == serial_in) ? "identical" : "MISMATCH");
    if (crew_in != serial_in || (CREW_BENCH_HAVE_OPENMP && omp_in != serial_in))
        fail("pi counts differ", 1);
    printf("  serial %.3f s\n", serial_s);
    printf("  crew_pool_reduce (grain automatic) %.3f s", crew_s);
    print_speedup(serial_s, crew_s);
    printf("\n");
    if (CREW_BENCH_HAVE_OPENMP) {
        printf("  openmp parallel for reduction(+:inside) schedule(static), %d-sample blocks %.3f s", PI_OMP_BLOCK,
               omp_s);
        print_speedup(serial_s, omp_s);
        printf("\n  crew ratio %.3fx (target <= 1.05x); speed-up crew %.2fx vs openmp %.2fx (target crew >= openmp)\n",
               crew_s / omp_s, serial_s / crew_s, serial_s / omp_s);
    } else {
        printf("  openmp: not available\n");
    }
    fflush(stdout);
}

/* --------------------------------------------------------------- primes */

static int primes_body(size_t b, size_t e, void *acc, void *ctx) {
    (void)ctx;
    *(uint64_t *)acc += bench_sum_primes((long)b, (long)e);
    return 0;
}

/* Sums of the primes <= targets[t], crew: one crew_pool_reduce per target
 * over 2..target, split adaptively. Returns the seconds for all three. */
static double crew_primes(const long *targets, uint64_t *sums) {
    double t0 = crew_now();
    for (int t = 0; t < NTARGETS; t++) {
        crew_reduce red = {.begin = 2, .end = (size_t)targets[t] + 1, .body = primes_body, .combine = add_u64,
                           .identity = &zero_u64, .size = sizeof(uint64_t), .result = &sums[t]};
        int rc = crew_pool_reduce(pool, &red);
        if (rc != 0)
            fail("crew_pool_reduce (primes)", rc);
    }
    double t = crew_now() - t0;
    settle();
    return t;
}

static double serial_primes(const long *targets, uint64_t *sums) {
    double t0 = crew_now();
    for (int t = 0; t < NTARGETS; t++)
        sums[t] = bench_sum_primes(2, targets[t] + 1);
    return crew_now() - t0;
}

#if CREW_BENCH_HAVE_OPENMP
static double omp_primes(const long *targets, uint64_t *sums, size_t chunk) {
    double t0 = crew_now();
    for (int t = 0; t < NTARGETS; t++)
        sums[t] = omp_pool_primes(2, targets[t] + 1, workers, chunk);
    double t1 = crew_now() - t0;
    settle();
    return t1;
}
#endif

static bool same_sums(const uint64_t *a, const uint64_t *b) {
    return a[0] == b[0] && a[1] == b[1] && a[2] == b[2];
}

/* Seconds of the seed's Python under multiprocessing.Pool(workers) on
 * `targets`, or 0 if Python is missing or failed. Its sums must be `want`. */
static double run_python(const long *targets, const uint64_t *want) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "python3 '%s/primes_pool.py' %d %ld %ld %ld 2>/dev/null", CREW_BENCH_PYDIR, workers,
             targets[0], targets[1], targets[2]);
    FILE *f = popen(cmd, "r");
    if (!f)
        return 0;
    double secs = 0;
    unsigned long long s[NTARGETS] = {0};
    int n = fscanf(f, "seconds %lf sums %llu %llu %llu", &secs, &s[0], &s[1], &s[2]);
    pclose(f);
    if (n != 4)
        return 0;
    for (int t = 0; t < NTARGETS; t++) {
        if (s[t] != want[t]) {
            fprintf(stderr, "bench_pool: python sum for %ld wrong: %llu\n", targets[t], s[t]);
            failures++;
        }
    }
    return secs;
}

static void bench_primes(bool quick) {
    const long targets[NTARGETS] = {1000000, 2000000, 3000000};
    const long small[NTARGETS] = {100000, 200000, 300000};
    const long *py_targets = quick ? small : targets;
    int reps = 3;
    uint64_t serial_sum[NTARGETS], crew_sum[NTARGETS];
    double serial_s = 1e300, crew_s = 1e300;
#if CREW_BENCH_HAVE_OPENMP
    uint64_t sum[NTARGETS];
    double omp_st = 1e300, omp_dy = 1e300;
#endif
    for (int r = 0; r < reps; r++) {
        serial_s = min_d(serial_s, serial_primes(targets, serial_sum));
        crew_s = min_d(crew_s, crew_primes(targets, crew_sum));
        if (!same_sums(crew_sum, serial_sum))
            fail("primes: crew sums differ from serial", 1);
#if CREW_BENCH_HAVE_OPENMP
        omp_st = min_d(omp_st, omp_primes(targets, sum, 0));
        if (!same_sums(sum, serial_sum))
            fail("primes: openmp static sums differ from serial", 1);
        omp_dy = min_d(omp_dy, omp_primes(targets, sum, PRIMES_DYN_CHUNK));
        if (!same_sums(sum, serial_sum))
            fail("primes: openmp dynamic sums differ from serial", 1);
#endif
    }
    printf("primes: sums of primes <= %ld, %ld, %ld (seed's is_prime), s for all three, best of %d; "
           "ratio = crew / baseline\n",
           targets[0], targets[1], targets[2], reps);
    printf("  sums %llu %llu %llu (serial; crew and openmp identical unless reported)\n",
           (unsigned long long)serial_sum[0], (unsigned long long)serial_sum[1], (unsigned long long)serial_sum[2]);
    printf("  serial %.3f s\n", serial_s);
    printf("  crew_pool_reduce per target, grain automatic %.3f s", crew_s);
    print_speedup(serial_s, crew_s);
    printf(" (target speed-up >= 1.8x on 2 cores)\n");
#if CREW_BENCH_HAVE_OPENMP
    printf("  openmp parallel for reduction(+:sum) schedule(static) %.3f s", omp_st);
    print_speedup(serial_s, omp_st);
    printf(", crew ratio %.2fx\n", crew_s / omp_st);
    printf("  openmp parallel for reduction(+:sum) schedule(dynamic, %d) %.3f s", PRIMES_DYN_CHUNK, omp_dy);
    print_speedup(serial_s, omp_dy);
    printf(", crew ratio %.2fx\n", crew_s / omp_dy);
#else
    printf("  openmp: not available\n");
#endif
    fflush(stdout);

    /* Python: once (it takes tens of seconds), on the smaller targets with
     * --quick; crew is then timed again on the same targets. */
    uint64_t py_want[NTARGETS];
    double crew_py_s = crew_s;
    if (py_targets != targets) {
        serial_primes(py_targets, py_want);
        crew_py_s = 1e300;
        for (int r = 0; r < reps; r++) {
            crew_py_s = min_d(crew_py_s, crew_primes(py_targets, crew_sum));
            if (!same_sums(crew_sum, py_want))
                fail("primes: crew sums differ from serial (small targets)", 1);
        }
    } else {
        memcpy(py_want, serial_sum, sizeof py_want);
    }
    double py = run_python(py_targets, py_want);
    if (py > 0) {
        printf("  python multiprocessing.Pool(%d).map, the seed's code, targets %ld, %ld, %ld: %.2f s", workers,
               py_targets[0], py_targets[1], py_targets[2], py);
        if (py_targets != targets)
            printf(" (crew on the same targets %.4f s)", crew_py_s);
        printf(", crew ratio %.4fx (python %.0fx slower)\n", crew_py_s / py, py / crew_py_s);
    } else {
        printf("  python multiprocessing.Pool: python3 not found or failed, skipped\n");
    }
    fflush(stdout);
}

/* ----------------------------------------------------------------- main */

static const char *const section_names[] = {"empty", "tree", "for", "pi", "primes"};
static void (*const sections[])(bool) = {bench_empty, bench_tree, bench_for, bench_pi, bench_primes};
#define NSECTIONS (sizeof sections / sizeof sections[0])

int main(int argc, char **argv) {
    bool quick = false, chosen[NSECTIONS] = {false};
    cpus = crew_cpu_count();
    workers = cpus;
    int end = bench_cli(argc, argv, "bench_pool", section_names, NSECTIONS, chosen, &quick, &workers);
    if (end >= 0) return end;
    alarm(quick ? 300 : 1200); /* a hang ends the run */

    printf("bench_pool: crew %s, %d cpu(s), %d worker(s), build type %s%s, %s run\n", crew_version(), cpus, workers,
           CREW_BENCH_BUILD_TYPE, strcmp(CREW_BENCH_BUILD_TYPE, "Debug") == 0 ? " (DEBUG: figures meaningless)" : "",
           quick ? "quick" : "full");
    /* The machine may be shared: say how busy it was. */
    double load1 = bench_load();
    if (load1 >= 0)
        printf("load average (1 min) at start: %.2f\n", load1);
    int rc = crew_pool_create(&pool, &(crew_pool_options){.workers = (size_t)workers, .name = "bench"});
    if (rc != 0) {
        fail("crew_pool_create", rc);
        return 1;
    }
#if CREW_BENCH_HAVE_OPENMP
    omp_pool_warm(workers);
    printf("openmp: %s, %d thread(s)\n", omp_pool_describe(), workers);
#else
    printf("openmp: not available (built without OpenMP)\n");
#endif
#if CREW_BENCH_HAVE_TBB
    have_tbb = tbb_pool_init(workers) == 0;
    if (have_tbb)
        printf("tbb: %s, task_arena of %d thread(s)\n", tbb_pool_describe(), workers);
    else
        printf("tbb: could not start an arena\n");
#else
    printf("tbb: not installed\n");
#endif
    printf("fairness: runs interleaved in the order serial, crew, openmp, tbb; each runtime left at its defaults "
           "(no OMP_WAIT_POLICY set), and a %.0f ms pause after every parallel run so that no runtime's threads "
           "still spin while the next is timed\n",
           PAUSE_S * 1e3);
    fflush(stdout);
    settle();

    for (size_t k = 0; k < NSECTIONS; k++)
        if (chosen[k])
            sections[k](quick);

    crew_pool_free(pool);
#if CREW_BENCH_HAVE_TBB
    if (have_tbb)
        tbb_pool_fini();
#endif
    return failures ? 1 : 0;
}
