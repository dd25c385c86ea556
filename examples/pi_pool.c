/* pi_pool: the seed tutorial's Monte Carlo estimate of pi, on a crew pool.
 *
 * The tutorial (seeds/001, "Multiprocessing Example: Monte Carlo") draws N
 * random points in the unit square and counts those inside the quarter
 * circle, splitting the work as Pool(P).map(find_pi, [N//P]*P) and
 * averaging the P estimates. Its workers all call random(), so the answer
 * depends on P and on how the workers' random states were forked.
 *
 * Here the N samples are one range [0, N) reduced with crew_pool_reduce.
 * Sample i uses the 32-bit outputs 4i .. 4i+3 of one Philox stream (two
 * doubles of two words each), so a body that counts [b, e) starts with
 * crew_rng_skip(&r, 4 * b): every sample gets the same numbers whatever the
 * split, and the count is the same on any number of workers, equal to the
 * serial one.
 *
 * With --processes the same reduce runs on a pool of processes, as the
 * tutorial's Pool does: each body runs in a worker process and hands its
 * count back through the shared arena; nothing else changes.
 *
 * usage: pi_pool [N] [WORKERS] [--processes] [--quick]
 *   N            samples (default 100,000,000)
 *   WORKERS      pool workers (default crew_cpu_count())
 *   --processes  worker processes (CREW_PROCESSES) instead of threads
 *   --quick      N = 1,000,000 unless given (for tests)
 * Prints the estimate, the serial and pool times and the speed-up; exits 1
 * if the pool's count differs from the serial one or the estimate is off.
 */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <crew.h>

#define SEED 2026

static const double PI = 3.14159265358979323846;

/* Count the samples in [b, e) that fall inside the quarter circle. */
static uint64_t count_inside(size_t b, size_t e) {
    crew_rng r;
    crew_rng_init(&r, SEED, 0);
    crew_rng_skip(&r, 4 * (uint64_t)b); /* sample b's first output */
    uint64_t inside = 0;
    for (size_t i = b; i < e; i++) {
        double x = crew_rng_uniform(&r), y = crew_rng_uniform(&r);
        inside += x * x + y * y <= 1.0;
    }
    return inside;
}

static int body(size_t b, size_t e, void *acc, void *ctx) {
    (void)ctx;
    *(uint64_t *)acc += count_inside(b, e);
    return 0;
}

static void add(void *acc, const void *other, void *ctx) {
    (void)ctx;
    *(uint64_t *)acc += *(const uint64_t *)other;
}

static long parse(const char *s, const char *what) {
    char *end;
    long v = strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0' || v < 1) {
        fprintf(stderr, "pi_pool: %s must be a positive integer, not '%s'\n", what, s);
        fprintf(stderr, "usage: pi_pool [N] [WORKERS] [--processes] [--quick]\n");
        exit(2);
    }
    return v;
}

int main(int argc, char **argv) {
    long n = 0, workers = 0;
    bool quick = false;
    crew_pool_kind kind = CREW_THREADS;
    int positional = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0)
            quick = true;
        else if (strcmp(argv[i], "--processes") == 0)
            kind = CREW_PROCESSES;
        else if (positional++ == 0)
            n = parse(argv[i], "N");
        else
            workers = parse(argv[i], "WORKERS");
    }
    if (n == 0)
        n = quick ? 1000000 : 100000000;

    double t0 = crew_now();
    uint64_t serial = count_inside(0, (size_t)n);
    double serial_s = crew_now() - t0;

    crew_pool *pool;
    int rc =
        crew_pool_create(&pool, &(crew_pool_options){.kind = kind, .workers = (size_t)workers});
    if (rc != 0) {
        fprintf(stderr, "pi_pool: crew_pool_create: %s\n", crew_strerror(rc));
        return 1;
    }
    uint64_t zero = 0, inside = 0;
    t0 = crew_now();
    rc = crew_pool_reduce(pool, &(crew_reduce){.begin = 0, .end = (size_t)n, .body = body,
                                               .combine = add, .identity = &zero,
                                               .size = sizeof inside, .result = &inside});
    double pool_s = crew_now() - t0;
    size_t used = crew_pool_workers(pool);
    crew_pool_free(pool);
    if (rc != 0) {
        fprintf(stderr, "pi_pool: crew_pool_reduce: %s\n", crew_strerror(rc));
        return 1;
    }

    double pi = 4.0 * (double)inside / (double)n;
    int cpus = crew_cpu_count();
    printf("pi ~ %.7f (error %.1e), %ld samples, %zu %s (crew_cpu_count %d)\n", pi, pi - PI, n,
           used, kind == CREW_PROCESSES ? "process(es)" : "thread(s)", cpus);
    printf("serial: %.3f s\n", serial_s);
    printf("pool:   %.3f s\n", pool_s);
    size_t cores = used < (size_t)cpus ? used : (size_t)cpus;
    printf("speed-up: %.2fx (parallel efficiency %.0f%% on %zu cpu(s))\n", serial_s / pool_s,
           100.0 * serial_s / pool_s / (double)cores, cores);

    /* Six standard deviations of the estimate: 4 sqrt(p (1 - p) / n). */
    double p = PI / 4;
    if (inside != serial || fabs(pi - PI) > 6 * 4 * sqrt(p * (1 - p) / (double)n)) {
        printf("WRONG: pool count %llu, serial count %llu\n", (unsigned long long)inside,
               (unsigned long long)serial);
        return 1;
    }
    return 0;
}
