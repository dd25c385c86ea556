/* apply_pool: the seed tutorials' tours of the Pool methods, with crew.
 *
 * seeds/004 ("The Pool class") squares and cubes 1..6 with Pool(4).apply,
 * map and apply_async; seeds/003 ("Pooling example") runs apply_async with
 * get(timeout=1), map, imap with next() and next(timeout=1), and finally
 * apply_async(time.sleep, (10,)).get(timeout=1), which raises TimeoutError.
 *
 * In crew, apply_async is crew_pool_submit, which returns a future; apply
 * is a submit followed by crew_future_get. A running thread cannot be
 * killed (Python's with-block would terminate the sleeping worker process),
 * so in a thread pool the long sleep waits on an event that main sets once
 * it has seen the timeout: long waits in tasks should be interruptible.
 * With --processes the workers are processes, and the program ends as
 * Python's with-block does: crew_pool_terminate kills the sleeping worker,
 * and its future fails with CREW_ECANCELED.
 *
 * usage: apply_pool [--processes] [--quick]
 *   --processes  worker processes (CREW_PROCESSES) instead of threads
 *   --quick      0.1 s timeouts instead of 1 s
 * Exits 1 on a wrong result.
 */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include <crew.h>

static int square(const void *in, void *out, void *ctx) {
    (void)ctx;
    long x = *(const long *)in;
    *(long *)out = x * x;
    return 0;
}

static int cube(const void *in, void *out, void *ctx) {
    (void)ctx;
    long x = *(const long *)in;
    *(long *)out = x * x * x;
    return 0;
}

/* time.sleep(seconds), cut short when the event in ctx (if any) is set. */
static int nap(const void *in, void *out, void *ctx) {
    (void)out;
    double seconds = *(const double *)in;
    int rc = ctx ? crew_event_wait(ctx, seconds) : crew_sleep(seconds);
    return rc == CREW_ETIMEDOUT ? 0 : rc;
}

/* apply_async(fn, (x,)) */
static int apply_async(crew_pool *pool, crew_task_fn fn, long x, crew_future **f) {
    return crew_pool_submit(pool, &(crew_task){.fn = fn, .in = &x, .in_size = sizeof x,
                                               .out_size = sizeof(long)}, f);
}

/* apply(fn, (x,)): submit and wait. */
static int apply(crew_pool *pool, crew_task_fn fn, long x, long *result) {
    crew_future *f;
    int rc = apply_async(pool, fn, x, &f);
    if (rc != 0)
        return rc;
    rc = crew_future_get(f, result, CREW_FOREVER);
    crew_future_free(f);
    return rc;
}

static void print_list(const char *label, const long *v, int n) {
    printf("%-12s [", label);
    for (int i = 0; i < n; i++)
        printf("%ld%s", v[i], i < n - 1 ? ", " : "]\n");
}

int main(int argc, char **argv) {
    double timeout = 1.0;
    bool processes = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0) {
            timeout = 0.1;
        } else if (strcmp(argv[i], "--processes") == 0) {
            processes = true;
        } else {
            fprintf(stderr, "usage: apply_pool [--processes] [--quick]\n");
            return 2;
        }
    }
    crew_pool *pool;
    int rc = crew_pool_create(&pool, &(crew_pool_options){
                                         .kind = processes ? CREW_PROCESSES : CREW_THREADS,
                                         .workers = 4});
    if (rc != 0) {
        fprintf(stderr, "apply_pool: crew_pool_create: %s\n", crew_strerror(rc));
        return 1;
    }
    int wrong = 0;

    /* seeds/004: [pool.apply(square, args=(x,)) for x in range(1,7)] */
    long xs[6], out[6];
    for (int i = 0; i < 6; i++)
        xs[i] = i + 1;
    for (int i = 0; i < 6; i++)
        wrong |= apply(pool, square, xs[i], &out[i]) != 0 || out[i] != xs[i] * xs[i];
    print_list("apply:", out, 6);

    /* pool.map(square, range(1,7)) */
    memset(out, 0, sizeof out);
    wrong |= crew_pool_map(pool, &(crew_map){.fn = square, .in = xs, .in_size = sizeof *xs,
                                             .out = out, .out_size = sizeof *out, .count = 6}) != 0;
    for (int i = 0; i < 6; i++)
        wrong |= out[i] != xs[i] * xs[i];
    print_list("map:", out, 6);

    /* results = [pool.apply_async(cube, args=(x,)) for x in range(1,7)]
     * output = [p.get() for p in results] */
    crew_future *fs[6] = {0};
    for (int i = 0; i < 6; i++)
        wrong |= apply_async(pool, cube, xs[i], &fs[i]) != 0;
    for (int i = 0; i < 6; i++) {
        wrong |= fs[i] == NULL || crew_future_get(fs[i], &out[i], CREW_FOREVER) != 0 ||
                 out[i] != xs[i] * xs[i] * xs[i];
        crew_future_free(fs[i]);
    }
    print_list("apply_async:", out, 6);

    /* seeds/003: result = pool.apply_async(f, (10,)); result.get(timeout=1) */
    crew_future *f;
    long y = 0;
    if ((rc = apply_async(pool, square, 10, &f)) == 0) {
        rc = crew_future_get(f, &y, timeout);
        crew_future_free(f);
    }
    printf("get:         %ld (%s)\n", y, crew_err_name(rc));
    wrong |= rc != 0 || y != 100;

    /* it = pool.imap(f, range(10)); it.next(); it.next(); it.next(timeout=1) */
    long ten[10];
    for (int i = 0; i < 10; i++)
        ten[i] = i;
    crew_imap_iter *it;
    rc = crew_pool_imap(pool, &(crew_imap){.fn = square, .in = ten, .count = 10,
                                           .in_size = sizeof(long), .out_size = sizeof(long)},
                        &it);
    if (rc == 0) {
        printf("imap:        ");
        for (int i = 0; i < 3; i++) {
            double t = i < 2 ? CREW_FOREVER : timeout;
            wrong |= crew_imap_next(it, &y, NULL, t) != 0 || y != i * i;
            printf("%ld%s", y, i < 2 ? ", " : "\n");
        }
        crew_imap_free(it); /* the rest is dropped */
    }
    wrong |= rc != 0;

    /* result = pool.apply_async(time.sleep, (10,)); result.get(timeout=1)
     * -> TimeoutError */
    crew_event stop;
    crew_event_init(&stop, 0);
    double ten_s = 10.0;
    rc = crew_pool_submit(pool, &(crew_task){.fn = nap, .in = &ten_s, .in_size = sizeof ten_s,
                                             .ctx = processes ? NULL : &stop}, &f);
    if (rc == 0) {
        rc = crew_future_get(f, NULL, timeout);
        printf("sleep(10):   %s after %g s\n", crew_err_name(rc), timeout);
        wrong |= rc != CREW_ETIMEDOUT;
        if (processes) {
            crew_pool_terminate(pool); /* the end of `with Pool() as pool:` */
            rc = crew_future_get(f, NULL, CREW_FOREVER);
            printf("terminate:   the sleeping worker killed, its task %s\n", crew_err_name(rc));
            wrong |= rc != CREW_ECANCELED;
        } else {
            crew_event_set(&stop); /* wake the nap: it returns at once */
            wrong |= crew_future_get(f, NULL, CREW_FOREVER) != 0;
        }
        crew_future_free(f);
    } else {
        wrong = 1;
    }

    crew_pool_free(pool);
    crew_event_destroy(&stop);
    if (wrong)
        printf("WRONG\n");
    return wrong;
}
