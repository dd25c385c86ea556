/* sum_pool: the seed tutorial's first Pool programs, with crew.
 *
 * The tutorial (seeds/000, "Using Pool") maps a range sum over two spans
 * with a pool of two processes, then a function returning two values over
 * range(20000) with four, and closes and joins the pool:
 *     pool = multiprocessing.Pool(processes=2)
 *     results = pool.map(sum_return, [[1, 1*10**6], [1*10**6, 1*10**7]])
 *     pool2 = multiprocessing.Pool(processes=4)
 *     results = pool2.map(f, range(20000))     # f(x) = x*x, x*x*x
 *     pool2.close(); pool2.join()
 *
 * In crew a list of arguments is an array of structs, and a tuple of
 * results is a struct too. The pools are threads, or with --processes
 * processes, as in the tutorial: the items and results then travel through
 * the shared arena, and the output is the same.
 *
 * usage: sum_pool [--processes] [--quick]   (--quick is accepted for the
 * tests; the program is small either way). Exits 1 on a wrong result.
 */
#include <stdio.h>
#include <string.h>

#include <crew.h>

#define COUNT 20000

typedef struct span {
    long lo, hi;
} span;

typedef struct powers {
    long square, cube;
} powers;

/* sum_return(vec): the sum of range(vec[0], vec[1]). */
static int sum_return(const void *in, void *out, void *ctx) {
    (void)ctx;
    const span *s = in;
    long sum = 0;
    for (long i = s->lo; i < s->hi; i++)
        sum += i;
    *(long *)out = sum;
    return 0;
}

/* f(x): x*x, x*x*x. */
static int f(const void *in, void *out, void *ctx) {
    (void)ctx;
    long x = *(const long *)in;
    *(powers *)out = (powers){x * x, x * x * x};
    return 0;
}

static int fail(const char *what, int rc) {
    fprintf(stderr, "sum_pool: %s: %s\n", what, crew_strerror(rc));
    return 1;
}

int main(int argc, char **argv) {
    crew_pool_kind kind = CREW_THREADS;
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--processes") == 0)
            kind = CREW_PROCESSES;
    crew_pool *pool, *pool2;
    int rc = crew_pool_create(&pool, &(crew_pool_options){.kind = kind, .workers = 2});
    if (rc != 0)
        return fail("crew_pool_create", rc);
    span spans[2] = {{1, 1000000}, {1000000, 10000000}};
    long sums[2];
    rc = crew_pool_map(pool, &(crew_map){.fn = sum_return, .in = spans, .in_size = sizeof *spans,
                                         .out = sums, .out_size = sizeof *sums, .count = 2});
    crew_pool_free(pool);
    if (rc != 0)
        return fail("crew_pool_map", rc);
    printf("[%ld, %ld]\n", sums[0], sums[1]);

    rc = crew_pool_create(&pool2, &(crew_pool_options){.kind = kind, .workers = 4});
    if (rc != 0)
        return fail("crew_pool_create", rc);
    static long xs[COUNT];
    static powers results[COUNT];
    for (long i = 0; i < COUNT; i++)
        xs[i] = i;
    rc = crew_pool_map(pool2, &(crew_map){.fn = f, .in = xs, .in_size = sizeof *xs,
                                          .out = results, .out_size = sizeof *results,
                                          .count = COUNT});
    crew_pool_close(pool2); /* no more work */
    crew_pool_join(pool2, CREW_FOREVER);
    crew_pool_free(pool2);
    if (rc != 0)
        return fail("crew_pool_map", rc);
    for (int i = 0; i < 10; i++)
        printf("(%ld, %ld)%s", results[i].square, results[i].cube, i < 9 ? ", " : "\n");

    int wrong = sums[0] != 499999500000L || sums[1] != 49499995500000L;
    for (long i = 0; i < COUNT; i++)
        wrong |= results[i].square != i * i || results[i].cube != i * i * i;
    if (wrong)
        printf("WRONG\n");
    return wrong;
}
