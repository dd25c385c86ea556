/* pmul_pool: the seed tutorial's element-wise array product, on a crew pool.
 *
 * The tutorial (seeds/002, "Multiprocessing basic shared memory") fills X
 * and Y with ROWS * COLS = 16,000,000 random numbers and computes
 * Z[i] = X[i] * Y[i]: serially, then with Pool().imap(pmul, offsets) over
 * COLS blocks of ROWS numbers (each block's result copied back to the
 * parent), then writing into a multiprocessing.Array or a ShareableList in
 * place with imap_unordered, and last with numpy on a ThreadPool(16).
 *
 * Threads share memory, so every crew version writes Z in place, as the
 * tutorial's shared-memory runs try to. Two are timed against the serial
 * loop: crew_pool_map over the COLS offsets (the tutorial's split; the map
 * item is the offset, the arrays are in ctx), and crew_pool_for over the
 * whole range, split by the pool. The loop reads 16 bytes and writes 8 per
 * multiplication, so memory bandwidth bounds it more than the cores do:
 * the speed-up depends on how much of the bandwidth one core can use.
 *
 * With --processes the pool's workers are processes, and X, Y and Z are
 * allocated in crew's shared arena (crew_shm_alloc), the counterpart of the
 * tutorial's multiprocessing.Array: the children read X and Y and write Z
 * in place, and nothing is copied. The struct passed as ctx is filled in
 * before the pool is created, so the children, forked then, see it.
 *
 * usage: pmul_pool [WORKERS] [--processes] [--quick]
 *   WORKERS      pool workers (default crew_cpu_count())
 *   --processes  worker processes (CREW_PROCESSES) instead of threads
 *   --quick      ROWS = 100,000 instead of 1,000,000 (for tests)
 * Exits 1 if a parallel Z differs from the serial one.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <crew.h>

#define COLS 16

typedef struct arrays {
    const double *x, *y;
    double *z;
    size_t rows;
} arrays;

static void mularray(const double *x, const double *y, double *z, size_t b, size_t e) {
    for (size_t i = b; i < e; i++)
        z[i] = x[i] * y[i];
}

/* pmul(offset): one block of ROWS numbers; the map item is the offset. */
static int pmul(const void *in, void *out, void *ctx) {
    (void)out;
    const arrays *a = ctx;
    size_t offset = *(const size_t *)in;
    mularray(a->x, a->y, a->z, offset, offset + a->rows);
    return 0;
}

/* The crew_pool_for body: any sub-range [b, e). */
static int pmul_range(size_t b, size_t e, void *ctx) {
    const arrays *a = ctx;
    mularray(a->x, a->y, a->z, b, e);
    return 0;
}

/* An array of n doubles: in the shared arena for a process pool. */
static double *alloc_doubles(size_t n, bool shared) {
    return shared ? crew_shm_alloc(n * sizeof(double)) : malloc(n * sizeof(double));
}

static void free_doubles(double *p, bool shared) {
    if (shared)
        crew_shm_free(p);
    else
        free(p);
}

int main(int argc, char **argv) {
    long workers = 0;
    bool quick = false, processes = false;
    for (int i = 1; i < argc; i++) {
        char *end;
        if (strcmp(argv[i], "--quick") == 0) {
            quick = true;
        } else if (strcmp(argv[i], "--processes") == 0) {
            processes = true;
        } else if ((workers = strtol(argv[i], &end, 10)) < 1 || *end != '\0') {
            fprintf(stderr, "usage: pmul_pool [WORKERS] [--processes] [--quick]\n");
            return 2;
        }
    }
    size_t rows = quick ? 100000 : 1000000, n = rows * COLS;

    double t0 = crew_now();
    double *x = alloc_doubles(n, processes), *y = alloc_doubles(n, processes);
    double *z = alloc_doubles(n, processes), *z0 = malloc(n * sizeof *z0);
    if (x == NULL || y == NULL || z0 == NULL || z == NULL) {
        fprintf(stderr, "pmul_pool: out of memory\n");
        return 1;
    }
    crew_rng r;
    crew_rng_init(&r, 2026, 0);
    for (size_t i = 0; i < n; i++) {
        x[i] = crew_rng_uniform(&r);
        y[i] = crew_rng_uniform(&r);
        z0[i] = z[i] = 0.0; /* touch every page before the timed loops */
    }
    double alloc_s = crew_now() - t0;

    t0 = crew_now();
    mularray(x, y, z0, 0, n);
    double serial_s = crew_now() - t0;

    arrays a = {x, y, z, rows}; /* ctx: set before the pool's processes are forked */
    crew_pool *pool;
    int rc = crew_pool_create(&pool, &(crew_pool_options){
                                         .kind = processes ? CREW_PROCESSES : CREW_THREADS,
                                         .workers = (size_t)workers});
    if (rc != 0) {
        fprintf(stderr, "pmul_pool: crew_pool_create: %s\n", crew_strerror(rc));
        return 1;
    }

    /* for Zpart in pool.imap(pmul, offsets): ... -- written in place */
    size_t offsets[COLS];
    for (size_t c = 0; c < COLS; c++)
        offsets[c] = c * rows;
    t0 = crew_now();
    rc = crew_pool_map(pool, &(crew_map){.fn = pmul, .in = offsets, .in_size = sizeof *offsets,
                                         .count = COLS, .ctx = &a});
    double map_s = crew_now() - t0;
    bool same_map = rc == 0 && memcmp(z, z0, n * sizeof *z) == 0;

    /* The whole range, split by the pool. */
    memset(z, 0, n * sizeof *z);
    t0 = crew_now();
    rc = crew_pool_for(pool, &(crew_for){.begin = 0, .end = n, .body = pmul_range, .ctx = &a});
    double for_s = crew_now() - t0;
    bool same_for = rc == 0 && memcmp(z, z0, n * sizeof *z) == 0;
    size_t used = crew_pool_workers(pool);
    crew_pool_free(pool);

    printf("Z = X * Y, %zu x %d doubles, %zu %s (crew_cpu_count %d)\n", rows, COLS, used,
           processes ? "process(es), arrays in the arena" : "thread(s)", crew_cpu_count());
    printf("allocation:          %.3f s\n", alloc_s);
    printf("serial:              %.3f s\n", serial_s);
    printf("map over %d offsets: %.3f s (%.2fx)%s\n", COLS, map_s, serial_s / map_s,
           same_map ? "" : "  WRONG");
    printf("for over the range:  %.3f s (%.2fx)%s\n", for_s, serial_s / for_s,
           same_for ? "" : "  WRONG");
    free_doubles(x, processes);
    free_doubles(y, processes);
    free_doubles(z, processes);
    free(z0);
    return same_map && same_for ? 0 : 1;
}
