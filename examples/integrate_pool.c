/* integrate_pool: the seed tutorial's numerical integration, on a crew pool.
 *
 * The tutorial (seeds/003, "A CPU bound problem") integrates f(x) = x**2 by
 * a left Riemann sum,
 *     def integrate(f, a, b, N):
 *         dx = (b-a)/N
 *         return sum(f(a+i*dx) for i in range(N)) * dx
 * then splits [a, b] into thread_count pieces for threading.Thread or
 * multiprocessing workers and adds their results from a Queue (its
 * threading version, integrate_main.py, takes "a b N thread_count").
 *
 * Here the N strips are one range [0, N) reduced with crew_pool_reduce. The
 * reduction cuts the range and combines the partial sums the same way
 * whatever the number of workers, so the result is the same bit for bit on
 * one worker or many; the program checks that, and compares with the
 * serial loop (which adds in another order) and with the exact integral.
 *
 * With --processes the pools' workers are processes (the tutorial's
 * multiprocessing version). The strips' parameters, passed as ctx, are set
 * before any pool is created, so the forked workers see them; the partial
 * sums come back through the shared arena, and the result is the same.
 *
 * usage: integrate_pool [a] [b] [N] [WORKERS] [--processes] [--quick]
 *   a, b         the interval (default 0 and 10)
 *   N            strips (default 1,000,000,000)
 *   WORKERS      pool workers (default crew_cpu_count())
 *   --processes  worker processes (CREW_PROCESSES) instead of threads
 *   --quick      N = 1,000,000 unless given (for tests)
 * Exits 1 on a wrong result.
 */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <crew.h>

static double f(double x) { return x * x; }

typedef struct strips {
    double a, dx;
} strips;

/* Reduce body: add f at the left edge of strips [b, e) to *acc. */
static int strip_sum(size_t b, size_t e, void *acc, void *ctx) {
    const strips *s = ctx;
    double sum = 0.0;
    for (size_t i = b; i < e; i++)
        sum += f(s->a + (double)i * s->dx);
    *(double *)acc += sum;
    return 0;
}

static void add(void *acc, const void *other, void *ctx) {
    (void)ctx;
    *(double *)acc += *(const double *)other;
}

/* The seed's integrate(f, a, b, N), on `pool`: s holds a and dx. */
static int integrate(crew_pool *pool, const strips *s, size_t n, double *out) {
    double zero = 0.0, sum;
    int rc = crew_pool_reduce(pool, &(crew_reduce){.begin = 0, .end = n, .body = strip_sum,
                                                   .combine = add, .identity = &zero,
                                                   .size = sizeof sum, .result = &sum,
                                                   .ctx = (void *)s});
    *out = sum * s->dx;
    return rc;
}

static double time_integrate(crew_pool_kind kind, size_t workers, const strips *s, size_t n,
                             double *out) {
    crew_pool *pool;
    int rc = crew_pool_create(&pool, &(crew_pool_options){.kind = kind, .workers = workers});
    if (rc != 0) {
        fprintf(stderr, "integrate_pool: crew_pool_create: %s\n", crew_strerror(rc));
        exit(1);
    }
    double t0 = crew_now();
    rc = integrate(pool, s, n, out);
    double t = crew_now() - t0;
    crew_pool_free(pool);
    if (rc != 0) {
        fprintf(stderr, "integrate_pool: crew_pool_reduce: %s\n", crew_strerror(rc));
        exit(1);
    }
    return t;
}

int main(int argc, char **argv) {
    double arg[4] = {0.0, 10.0, 0.0, 0.0}; /* a, b, N, WORKERS */
    bool quick = false;
    crew_pool_kind kind = CREW_THREADS;
    int positional = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0) {
            quick = true;
            continue;
        }
        if (strcmp(argv[i], "--processes") == 0) {
            kind = CREW_PROCESSES;
            continue;
        }
        char *end = argv[i];
        if (positional < 4)
            arg[positional++] = strtod(argv[i], &end);
        if (end == argv[i] || *end != '\0') {
            fprintf(stderr,
                    "usage: integrate_pool [a] [b] [N] [WORKERS] [--processes] [--quick]\n");
            return 2;
        }
    }
    double a = arg[0], b = arg[1];
    if (arg[2] < 0 || arg[3] < 0 || arg[2] != floor(arg[2]) || arg[3] != floor(arg[3])) {
        fprintf(stderr, "integrate_pool: N and WORKERS must be whole numbers\n");
        return 2;
    }
    size_t n = arg[2] > 0 ? (size_t)arg[2] : quick ? 1000000 : 1000000000;
    size_t workers = (size_t)arg[3] > 0 ? (size_t)arg[3] : (size_t)crew_cpu_count();

    /* Before any pool exists: a process pool's workers see it as it is. */
    strips s = {a, (b - a) / (double)n};

    /* Serial: the seed's loop. */
    double t0 = crew_now(), serial = 0.0;
    strip_sum(0, n, &serial, &s);
    serial *= s.dx;
    double serial_s = crew_now() - t0;

    double one, many;
    double one_s = time_integrate(kind, 1, &s, n, &one);
    double pool_s = time_integrate(kind, workers, &s, n, &many);

    double exact = (b * b * b - a * a * a) / 3.0;
    printf("integral of x**2 over [%g, %g], N = %zu (exact %.15g), %s\n", a, b, n, exact,
           kind == CREW_PROCESSES ? "worker processes" : "worker threads");
    printf("serial:              %.3f s  %.15g\n", serial_s, serial);
    printf("pool, 1 worker:      %.3f s  %.15g\n", one_s, one);
    printf("pool, %zu worker(s):  %.3f s  %.15g\n", workers, pool_s, many);
    int cpus = crew_cpu_count();
    size_t cores = workers < (size_t)cpus ? workers : (size_t)cpus;
    printf("speed-up: %.2fx (parallel efficiency %.0f%% on %zu cpu(s))\n", serial_s / pool_s,
           100.0 * serial_s / pool_s / (double)cores, cores);
    printf("1 worker and %zu worker(s) agree bit for bit: %s\n", workers,
           memcmp(&one, &many, sizeof one) == 0 ? "yes" : "NO");

    /* A left Riemann sum is off by at most (b - a) V / N, V the variation of
     * f over [a, b] (for x**2, at most f(a) + f(b)); the serial loop differs
     * from the pool only by rounding, which grows with N in a long serial
     * sum. */
    double bound = fabs(b - a) * (f(a) + f(b)) / (double)n + 1e-9 * fabs(exact);
    bool ok = memcmp(&one, &many, sizeof one) == 0 && fabs(many - exact) <= bound &&
              fabs(many - serial) <= 1e-7 * fabs(exact) + 1e-12;
    if (!ok)
        printf("WRONG\n");
    return ok ? 0 : 1;
}
