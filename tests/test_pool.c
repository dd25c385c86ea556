/* Unit tests for the pool module (pool.h): creation and its options
 * (workers, initializer, max_pending, name), submit with results, error
 * codes, callbacks, cancellation and input copy/borrow, backpressure, map
 * and map_async (chunk sizes, ordering, failures), imap ordered and
 * unordered (lazy input in bounded memory, failed items, timeouts, freeing
 * mid-stream), for and reduce (every iteration once, grains, errors,
 * bit-identical floating-point results, identity), progress callbacks,
 * waiting on futures, nesting three levels deep, close / join / terminate /
 * free, task indices with per-task random streams, fork, and task groups
 * (every task once, first failure, cancel, timeouts, nesting and recursion,
 * inline runs when throttled, close / terminate / free).
 *
 * One suite for every pool kind. main() runs each test once per kind in
 * `kinds` (the kind reaches the test as its cmocka state, and its name is
 * part of the test's name: "threads:map_chunk_sizes"). The process and MPI
 * pools will be added to `kinds` and must pass the same tests unchanged, so
 * a test observes what its tasks did only through what every kind carries
 * back to the caller: out arrays, futures, imap results, reduce results, and
 * callbacks (which run in the caller's process). Two kinds of tests need
 * more, and say so in the table in main():
 *   SHARED_MAP    tasks use a MAP_SHARED mapping made before the pool is
 *                 created (gates that hold a task until the test lets it
 *                 go, counters): threads and processes, not MPI.
 *   THREADS_ONLY  tasks write the caller's ordinary memory (or the test
 *                 looks at threads): thread pools only.
 *
 * Each test runs in a process of its own (test_run_forked). Nothing sleeps
 * to wait for another thread: a test that needs a task to be running holds
 * it on a gate (a CREW_SHARED crew_event) and polls the future's state or a
 * counter with a generous deadline (TEST_WAIT_UNTIL); a helper thread that
 * must be blocked in a call is watched in /proc until it sleeps in futex().
 * Task bodies never call cmocka; they return an error code (CREW_EPROTO for
 * a broken expectation) that the test asserts on. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "crew/clock.h"
#include "crew/error.h"
#include "crew/future.h"
#include "crew/pool.h"
#include "crew/rng.h"
#include "crew/sync.h"
#include "crew/thread.h"

/* How long one test process may run before the runner kills it. */
#define TEST_PROCESS_LIMIT 120.0
#include "test_harness.h"

/* ------------------------------------------------------------ the kinds */

/* Every test runs once per kind listed here. */
static const crew_pool_kind kinds[] = {CREW_THREADS, CREW_PROCESSES};

typedef enum needs {
    ANY_KIND,     /* results come back through outputs, futures, callbacks */
    SHARED_MAP,   /* tasks use a MAP_SHARED mapping made before the pool */
    THREADS_ONLY, /* tasks write the caller's memory, or threads are examined */
} needs;

static bool kind_has(crew_pool_kind kind, needs need) {
    switch (need) {
    case ANY_KIND: return true;
    case SHARED_MAP: return kind == CREW_THREADS || kind == CREW_PROCESSES;
    case THREADS_ONLY: return kind == CREW_THREADS;
    }
    return false;
}

static const char *kind_name(crew_pool_kind kind) {
    switch (kind) {
    case CREW_THREADS: return "threads";
    case CREW_PROCESSES: return "processes";
    case CREW_MPI: return "mpi";
    }
    return "unknown";
}

/* The kind under test, in a test function. */
#define KIND (*(const crew_pool_kind *)*state)

/* ---------------------------------------------------------- common tasks */

typedef struct rec {
    int64_t v;
    uint64_t index;
} rec;

static int64_t f_of(int64_t v) { return v * 3 + 1; }

/* in: int64 v; v < 0 fails with the code v. out: int64 f(v). */
static int t_val(const void *in, void *out, void *ctx) {
    (void)ctx;
    int64_t v;
    memcpy(&v, in, sizeof v);
    if (v < 0) return (int)v;
    v = f_of(v);
    memcpy(out, &v, sizeof v);
    return 0;
}

/* The same with a rec out: {f(v), crew_pool_task_index()}. */
static int t_rec(const void *in, void *out, void *ctx) {
    (void)ctx;
    int64_t v;
    memcpy(&v, in, sizeof v);
    if (v < 0) return (int)v;
    rec r = {f_of(v), (uint64_t)crew_pool_task_index()};
    memcpy(out, &r, sizeof r);
    return 0;
}

/* in_size 0: out = {(intptr_t)in, task index}; `in` is never read. */
static int t_ptr(const void *in, void *out, void *ctx) {
    (void)ctx;
    rec r = {(int64_t)(intptr_t)in, (uint64_t)crew_pool_task_index()};
    memcpy(out, &r, sizeof r);
    return 0;
}

/* out_size 0: the task gets out == NULL. */
static int t_no_out(const void *in, void *out, void *ctx) {
    (void)in;
    (void)ctx;
    return out == NULL ? 0 : CREW_EPROTO;
}

/* in: 8 int64 words (64 bytes), none negative. out: int64 their sum. */
static int t_sum8(const void *in, void *out, void *ctx) {
    (void)ctx;
    int64_t w[8], s = 0;
    memcpy(w, in, sizeof w);
    for (int k = 0; k < 8; k++) {
        if (w[k] < 0) return CREW_EPROTO;
        s += w[k];
    }
    memcpy(out, &s, sizeof s);
    return 0;
}

/* out: rec {(intptr_t)crew_pool_current(), task index}. */
static int t_current(const void *in, void *out, void *ctx) {
    (void)in;
    (void)ctx;
    rec r = {(int64_t)(intptr_t)crew_pool_current(), (uint64_t)crew_pool_task_index()};
    memcpy(out, &r, sizeof r);
    return 0;
}

/* ----------------------------------------------------- gates (shared) */

/* Lives in a MAP_SHARED mapping made before the pool, so its events and
 * counters work for thread and process pools alike. */
typedef struct gates {
    crew_event ev[3];
    _Atomic long started;  /* t_gate tasks that began */
    _Atomic long finished; /* t_gate tasks that returned */
    _Atomic long marks;    /* t_mark runs */
    int64_t data;          /* read through a borrowed pointer (in_size 0) */
} gates;

static gates *gates_new(void) {
    gates *g = shm_map(sizeof *g);
    for (int k = 0; k < 3; k++) ASSERT_RC(crew_event_init(&g->ev[k], CREW_SHARED), 0);
    atomic_init(&g->started, 0);
    atomic_init(&g->finished, 0);
    atomic_init(&g->marks, 0);
    g->data = 0;
    return g;
}

static void gates_free(gates *g) {
    for (int k = 0; k < 3; k++) ASSERT_RC(crew_event_destroy(&g->ev[k]), 0);
    shm_unmap(g, sizeof *g);
}

static void gate_open(gates *g, int k) { ASSERT_RC(crew_event_set(&g->ev[k]), 0); }

typedef struct gitem {
    int64_t v;
    int32_t gate;   /* wait for this gate first; -1: none */
    int32_t nested; /* then submit this many t_val tasks on the pool and wait */
} gitem;

/* ctx: gates. out: int64 gate_result(v, nested). */
static int t_gate(const void *in, void *out, void *ctx) {
    gates *g = ctx;
    gitem it;
    memcpy(&it, in, sizeof it);
    atomic_fetch_add(&g->started, 1);
    if (it.gate >= 0 && crew_event_wait(&g->ev[it.gate], LONG_WAIT) != 0) return CREW_ETIMEDOUT;
    int64_t r = f_of(it.v);
    for (int32_t k = 0; k < it.nested; k++) {
        crew_pool *p = crew_pool_current();
        if (p == NULL) return CREW_EPROTO;
        int64_t x = k, y = 0;
        crew_task t = {.fn = t_val, .in = &x, .in_size = sizeof x, .out_size = sizeof y};
        crew_future *f = NULL;
        int rc = crew_pool_submit(p, &t, &f);
        if (rc != 0) return rc;
        rc = crew_future_get(f, &y, LONG_WAIT);
        crew_future_free(f);
        if (rc != 0) return rc;
        r += y;
    }
    atomic_fetch_add(&g->finished, 1);
    if (out != NULL) memcpy(out, &r, sizeof r);
    return 0;
}

static int64_t gate_result(int64_t v, int nested) {
    int64_t r = f_of(v);
    for (int k = 0; k < nested; k++) r += f_of(k);
    return r;
}

/* ctx: gates; counts its runs. No input, no output. */
static int t_mark(const void *in, void *out, void *ctx) {
    (void)in;
    (void)out;
    gates *g = ctx;
    atomic_fetch_add(&g->marks, 1);
    return 0;
}

/* in: a borrowed pointer to an int64 (in_size 0). out: rec {*in, (intptr_t)in}. */
static int t_read_borrowed(const void *in, void *out, void *ctx) {
    (void)ctx;
    int64_t v;
    memcpy(&v, in, sizeof v);
    rec r = {v, (uint64_t)(uintptr_t)in};
    memcpy(out, &r, sizeof r);
    return 0;
}

/* ------------------------------------------------------------- helpers */

static crew_pool *pool_opts(crew_pool_kind kind, crew_pool_options *o) {
    o->kind = kind;
    crew_pool *p = NULL;
    ASSERT_RC(crew_pool_create(&p, o), 0);
    assert_non_null(p);
    size_t want = o->workers != 0 ? o->workers : (size_t)crew_cpu_count();
    assert_int_equal(crew_pool_workers(p), want);
    return p;
}

static crew_pool *pool_with(crew_pool_kind kind, size_t workers, size_t max_pending) {
    crew_pool_options o = {.workers = workers, .max_pending = max_pending};
    return pool_opts(kind, &o);
}

/* close, join, free. */
static void pool_end(crew_pool *p) {
    ASSERT_RC(crew_pool_close(p), 0);
    ASSERT_RC(crew_pool_join(p, LONG_WAIT), 0);
    crew_pool_free(p);
}

static crew_future *submit_task(crew_pool *p, crew_task_fn fn, const void *in, size_t in_size,
                                size_t out_size, void *ctx) {
    crew_task t = {.fn = fn, .in = in, .in_size = in_size, .out_size = out_size, .ctx = ctx};
    crew_future *f = NULL;
    ASSERT_RC(crew_pool_submit(p, &t, &f), 0);
    assert_non_null(f);
    return f;
}

static crew_future *submit_val(crew_pool *p, int64_t v) {
    return submit_task(p, t_val, &v, sizeof v, sizeof v, NULL);
}

static crew_future *submit_gated(crew_pool *p, gates *g, int64_t v, int gate, int nested) {
    gitem it = {v, gate, nested};
    return submit_task(p, t_gate, &it, sizeof it, sizeof(int64_t), g);
}

/* Get an int64 result, expecting `want`, and drop the future. */
static void get_val(crew_future *f, int64_t want) {
    int64_t got = INT64_MIN;
    ASSERT_RC(crew_future_get(f, &got, LONG_WAIT), 0);
    assert_int_equal(got, want);
    crew_future_free(f);
}

/* out[i] = {f(in[i]), i} for `count` items with chunk size `chunk`, and
 * nothing written past the end. */
static void map_check(crew_pool *p, size_t count, size_t chunk) {
    int64_t *in = malloc((count + 1) * sizeof *in);
    rec *out = malloc((count + 1) * sizeof *out);
    assert_non_null(in);
    assert_non_null(out);
    for (size_t i = 0; i <= count; i++) {
        in[i] = (int64_t)i * 7 + 3;
        out[i] = (rec){-1, 999999};
    }
    size_t failed = 777;
    crew_map m = {.fn = t_rec, .in = in, .in_size = sizeof *in, .out = out, .out_size = sizeof *out,
                  .count = count, .chunk_size = chunk, .failed_index = &failed};
    ASSERT_RC(crew_pool_map(p, &m), 0);
    size_t bad = 0, first = SIZE_MAX;
    for (size_t i = 0; i < count; i++)
        if (out[i].v != f_of(in[i]) || out[i].index != i) {
            if (bad++ == 0) first = i;
        }
    if (bad != 0)
        fail_msg("map of %zu items, chunk %zu: %zu wrong, first [%zu] = {%lld, %llu}", count, chunk,
                 bad, first, (long long)out[first].v, (unsigned long long)out[first].index);
    assert_int_equal(out[count].v, -1); /* past the end: untouched */
    assert_int_equal(out[count].index, 999999);
    assert_int_equal(failed, 777); /* left alone on success */
    free(in);
    free(out);
}

static crew_imap_iter *imap_start(crew_pool *p, const crew_imap *im) {
    crew_imap_iter *it = NULL;
    ASSERT_RC(crew_pool_imap(p, im, &it), 0);
    assert_non_null(it);
    return it;
}

/* A helper thread making one blocking call. */
typedef struct helper helper;
struct helper {
    pthread_t th;
    int (*op)(helper *h);
    crew_pool *pool;
    const crew_task *task;
    crew_future *f;
    const crew_map *map;
    crew_imap_iter *it;
    gates *g;
    crew_group *group;
    long seen; /* op_imap_free: g->started - g->finished at its return */
    _Atomic int tid;
    _Atomic bool done;
    int rc;
};

static void *helper_main(void *arg) {
    helper *h = arg;
    atomic_store(&h->tid, my_tid());
    h->rc = h->op(h);
    atomic_store(&h->done, true);
    return NULL;
}

static void helper_start(helper *h, int (*op)(helper *)) {
    h->op = op;
    atomic_init(&h->tid, 0);
    atomic_init(&h->done, false);
    h->rc = 12345;
    th_start(&h->th, helper_main, h);
}

static int op_submit(helper *h) { return crew_pool_submit(h->pool, h->task, &h->f); }
static int op_map(helper *h) { return crew_pool_map(h->pool, h->map); }
static int op_imap_free(helper *h) {
    crew_imap_free(h->it);
    h->seen = atomic_load(&h->g->started) - atomic_load(&h->g->finished);
    return 0;
}

/* The helper is asleep in its call (not returned, not spinning). */
static void assert_blocked(helper *h) {
    if (thread_blocked(&h->tid, &h->done, SETTLE)) return;
    if (atomic_load(&h->done))
        fail_msg("the helper returned %d (%s) instead of blocking", h->rc, crew_err_name(h->rc));
    fail_msg("the helper never slept in the call");
}

/* ---------------------------------------------------------------- create */

/* workers 0 (and opts NULL) give crew_cpu_count() workers, read afresh. */
static void test_create_default_workers(void **state) {
    crew_pool_kind kind = KIND;
    crew_pool *p = pool_with(kind, 0, 0);
    assert_int_equal(crew_pool_workers(p), (size_t)crew_cpu_count());
    map_check(p, 100, 0);
    pool_end(p);

    assert_int_equal(setenv("CREW_CPU_COUNT", "3", 1), 0);
    assert_int_equal(crew_cpu_count(), 3);
    p = pool_with(kind, 0, 0);
    assert_int_equal(crew_pool_workers(p), 3);
    map_check(p, 100, 1);
    pool_end(p);
    assert_int_equal(unsetenv("CREW_CPU_COUNT"), 0);

    if (kind == CREW_THREADS) { /* opts NULL: a thread pool with the defaults */
        p = NULL;
        ASSERT_RC(crew_pool_create(&p, NULL), 0);
        assert_int_equal(crew_pool_workers(p), (size_t)crew_cpu_count());
        map_check(p, 100, 0);
        pool_end(p);
    }
}

/* 1 worker, and many more workers than cores. */
static void test_create_explicit_workers(void **state) {
    const size_t ws[] = {1, 2, 16};
    for (size_t k = 0; k < 3; k++) {
        crew_pool *p = pool_with(KIND, ws[k], 0);
        assert_int_equal(crew_pool_workers(p), ws[k]);
        map_check(p, 1000, 1);
        pool_end(p);
    }
}

/* in: int64 n. Waits until n tasks (itself included) have started. out:
 * int64 how many had started then. */
static int t_rendezvous(const void *in, void *out, void *ctx) {
    gates *g = ctx;
    int64_t n;
    memcpy(&n, in, sizeof n);
    atomic_fetch_add(&g->started, 1);
    if (!TEST_WAIT_UNTIL(atomic_load(&g->started) >= n, LONG_WAIT)) return CREW_ETIMEDOUT;
    int64_t seen = atomic_load(&g->started);
    memcpy(out, &seen, sizeof seen);
    return 0;
}

/* n workers are n workers, even with more of them than cores: n tasks that
 * each wait for all n to have started all finish. A queued task must not
 * wait behind a busy worker while another sleeps. */
static void test_workers_run_concurrently(void **state) {
    gates *g = gates_new();
    const int64_t ws[] = {2, 3, 16};
    for (size_t k = 0; k < 3; k++) {
        int64_t n = ws[k];
        crew_pool *p = pool_with(KIND, (size_t)n, 0);
        for (int round = 0; round < 5; round++) {
            atomic_store(&g->started, 0);
            crew_future *fs[16];
            for (int64_t i = 0; i < n; i++)
                fs[i] = submit_task(p, t_rendezvous, &n, sizeof n, sizeof(int64_t), g);
            for (int64_t i = 0; i < n; i++) {
                int64_t got = -1;
                int rc = crew_future_get(fs[i], &got, 2 * LONG_WAIT);
                if (rc != 0 || got != n)
                    fail_msg("%lld workers, round %d: task %lld gave %s; %ld of the %lld tasks "
                             "had started by then",
                             (long long)n, round, (long long)i, crew_err_name(rc),
                             atomic_load(&g->started), (long long)n);
                crew_future_free(fs[i]);
            }
        }
        pool_end(p);
    }
    gates_free(g);
}

static void test_create_bad_options(void **state) {
    crew_pool_options o = {.kind = KIND, .workers = 2};
    ASSERT_RC(crew_pool_create(NULL, &o), CREW_EINVAL);
    crew_pool *p = NULL;
    o.kind = (crew_pool_kind)77;
    ASSERT_RC(crew_pool_create(&p, &o), CREW_EINVAL);
    o.kind = (crew_pool_kind)-1;
    ASSERT_RC(crew_pool_create(&p, &o), CREW_EINVAL);
    /* The options are not consumed: a good set still works afterwards. */
    o.kind = KIND;
    p = pool_opts(KIND, &o);
    pool_end(p);
}

/* --------------------------------------------------------- initializer */

static _Thread_local int64_t tl_inits; /* the initializer's runs in this thread */
static const int init_marker = 42;     /* initarg */
static _Atomic int init_calls;         /* THREADS_ONLY tests */

static int init_count(void *arg) {
    tl_inits++;
    return arg == &init_marker ? 0 : CREW_EPROTO;
}

static int init_counting(void *arg) {
    atomic_fetch_add(&init_calls, 1);
    return init_count(arg);
}

static int init_fails(void *arg) {
    (void)arg;
    return -4242;
}

static int init_third_fails(void *arg) {
    (void)arg;
    return atomic_fetch_add(&init_calls, 1) + 1 == 3 ? -4243 : 0;
}

/* out: int64 the initializer's runs in the worker running the task. */
static int t_inits(const void *in, void *out, void *ctx) {
    (void)in;
    (void)ctx;
    memcpy(out, &tl_inits, sizeof tl_inits);
    return 0;
}

/* Every task runs in a worker whose initializer ran once, with initarg. */
static void test_initializer_before_tasks(void **state) {
    const size_t ws[] = {1, 3};
    for (size_t k = 0; k < 2; k++) {
        crew_pool_options o = {.workers = ws[k], .initializer = init_count,
                               .initarg = (void *)&init_marker};
        crew_pool *p = pool_opts(KIND, &o);
        int64_t out[300];
        crew_map m = {.fn = t_inits, .in = NULL, .in_size = 0, .out = out, .out_size = sizeof *out,
                      .count = 300, .chunk_size = 1};
        ASSERT_RC(crew_pool_map(p, &m), 0);
        for (size_t i = 0; i < 300; i++) assert_int_equal(out[i], 1);
        crew_future *f = submit_task(p, t_inits, NULL, 0, sizeof(int64_t), NULL);
        get_val(f, 1);
        pool_end(p);
    }
}

/* THREADS_ONLY: exactly one initializer call per worker, all done when
 * create returns, none later. */
static void test_initializer_once_per_worker(void **state) {
    const size_t ws[] = {1, 5, 16};
    for (size_t k = 0; k < 3; k++) {
        atomic_store(&init_calls, 0);
        crew_pool_options o = {.workers = ws[k], .initializer = init_counting,
                               .initarg = (void *)&init_marker};
        crew_pool *p = pool_opts(KIND, &o);
        assert_int_equal(atomic_load(&init_calls), (int)ws[k]);
        map_check(p, 500, 1);
        pool_end(p);
        assert_int_equal(atomic_load(&init_calls), (int)ws[k]);
    }
}

/* An initializer that fails makes create fail with its code. */
static void test_initializer_fails(void **state) {
    const size_t ws[] = {1, 3};
    for (size_t k = 0; k < 2; k++) {
        crew_pool_options o = {.kind = KIND, .workers = ws[k], .initializer = init_fails};
        crew_pool *p = NULL;
        ASSERT_RC(crew_pool_create(&p, &o), -4242);
    }
}

/* THREADS_ONLY: one worker's failure out of several is enough. */
static void test_initializer_one_fails(void **state) {
    const size_t ws[] = {4, 8};
    for (size_t k = 0; k < 2; k++) {
        atomic_store(&init_calls, 0);
        crew_pool_options o = {.kind = KIND, .workers = ws[k], .initializer = init_third_fails};
        crew_pool *p = NULL;
        ASSERT_RC(crew_pool_create(&p, &o), -4243);
        assert_true(atomic_load(&init_calls) >= 3);
        assert_true(atomic_load(&init_calls) <= (int)ws[k]);
    }
}

/* ------------------------------------------------------ NULL and EINVAL */

static int b_nop(size_t b, size_t e, void *ctx) {
    (void)b;
    (void)e;
    (void)ctx;
    return 0;
}

static int r_nop(size_t b, size_t e, void *acc, void *ctx) {
    (void)b;
    (void)e;
    (void)acc;
    (void)ctx;
    return 0;
}

static void c_add_i64(void *acc, const void *other, void *ctx) {
    (void)ctx;
    int64_t a, b;
    memcpy(&a, acc, sizeof a);
    memcpy(&b, other, sizeof b);
    a += b;
    memcpy(acc, &a, sizeof a);
}

static const int64_t zero64 = 0;

static void test_null_arguments(void **state) {
    crew_pool *p = pool_with(KIND, 1, 0);
    int64_t in[4] = {1, 2, 3, 4}, out[4];
    crew_future *f = NULL;

    crew_task t = {.fn = t_val, .in = in, .in_size = 8, .out_size = 8};
    ASSERT_RC(crew_pool_submit(NULL, &t, &f), CREW_EINVAL);
    ASSERT_RC(crew_pool_submit(p, NULL, &f), CREW_EINVAL);
    ASSERT_RC(crew_pool_submit(p, &t, NULL), CREW_EINVAL);
    crew_task t2 = t;
    t2.fn = NULL;
    ASSERT_RC(crew_pool_submit(p, &t2, &f), CREW_EINVAL);
    t2 = t;
    t2.in = NULL; /* in_size > 0: there is nothing to copy */
    ASSERT_RC(crew_pool_submit(p, &t2, &f), CREW_EINVAL);
    assert_null(f);

    crew_map m = {.fn = t_val, .in = in, .in_size = 8, .out = out, .out_size = 8, .count = 4};
    ASSERT_RC(crew_pool_map(NULL, &m), CREW_EINVAL);
    ASSERT_RC(crew_pool_map(p, NULL), CREW_EINVAL);
    crew_map m2 = m;
    m2.fn = NULL;
    ASSERT_RC(crew_pool_map(p, &m2), CREW_EINVAL);
    m2 = m;
    m2.in = NULL;
    ASSERT_RC(crew_pool_map(p, &m2), CREW_EINVAL);
    m2 = m;
    m2.out = NULL;
    ASSERT_RC(crew_pool_map(p, &m2), CREW_EINVAL);
    ASSERT_RC(crew_pool_map_async(NULL, &m, &f), CREW_EINVAL);
    ASSERT_RC(crew_pool_map_async(p, NULL, &f), CREW_EINVAL);
    ASSERT_RC(crew_pool_map_async(p, &m, NULL), CREW_EINVAL);
    m2 = m;
    m2.fn = NULL;
    ASSERT_RC(crew_pool_map_async(p, &m2, &f), CREW_EINVAL);
    assert_null(f);

    crew_imap_iter *it = NULL;
    crew_imap im = {.fn = t_val, .in = in, .count = 4, .in_size = 8, .out_size = 8};
    ASSERT_RC(crew_pool_imap(NULL, &im, &it), CREW_EINVAL);
    ASSERT_RC(crew_pool_imap(p, NULL, &it), CREW_EINVAL);
    ASSERT_RC(crew_pool_imap(p, &im, NULL), CREW_EINVAL);
    crew_imap im2 = im;
    im2.fn = NULL;
    ASSERT_RC(crew_pool_imap(p, &im2, &it), CREW_EINVAL);
    im2 = im;
    im2.in = NULL; /* no array and no input callback */
    ASSERT_RC(crew_pool_imap(p, &im2, &it), CREW_EINVAL);
    assert_null(it);
    ASSERT_RC(crew_imap_next(NULL, out, NULL, SHORT), CREW_EINVAL);
    ASSERT_RC(crew_pool_imap(p, &im, &it), 0);
    ASSERT_RC(crew_imap_next(it, out, NULL, -1.0), CREW_EINVAL);
    ASSERT_RC(crew_imap_next(it, out, NULL, NAN), CREW_EINVAL);
    crew_imap_free(it);

    crew_for l = {.begin = 0, .end = 10, .body = b_nop};
    ASSERT_RC(crew_pool_for(NULL, &l), CREW_EINVAL);
    ASSERT_RC(crew_pool_for(p, NULL), CREW_EINVAL);
    crew_for l2 = l;
    l2.body = NULL;
    ASSERT_RC(crew_pool_for(p, &l2), CREW_EINVAL);

    int64_t res = 0;
    crew_reduce r = {.begin = 0, .end = 10, .body = r_nop, .combine = c_add_i64,
                     .identity = &zero64, .size = sizeof res, .result = &res};
    ASSERT_RC(crew_pool_reduce(NULL, &r), CREW_EINVAL);
    ASSERT_RC(crew_pool_reduce(p, NULL), CREW_EINVAL);
    crew_reduce r2 = r;
    r2.body = NULL;
    ASSERT_RC(crew_pool_reduce(p, &r2), CREW_EINVAL);
    r2 = r;
    r2.combine = NULL;
    ASSERT_RC(crew_pool_reduce(p, &r2), CREW_EINVAL);
    r2 = r;
    r2.identity = NULL;
    ASSERT_RC(crew_pool_reduce(p, &r2), CREW_EINVAL);
    r2 = r;
    r2.result = NULL;
    ASSERT_RC(crew_pool_reduce(p, &r2), CREW_EINVAL);

    ASSERT_RC(crew_pool_close(NULL), CREW_EINVAL);
    ASSERT_RC(crew_pool_terminate(NULL), CREW_EINVAL);
    ASSERT_RC(crew_pool_join(NULL, SHORT), CREW_EINVAL);
    ASSERT_RC(crew_pool_close(p), 0);
    ASSERT_RC(crew_pool_join(p, -1.0), CREW_EINVAL);
    ASSERT_RC(crew_pool_join(p, NAN), CREW_EINVAL);
    ASSERT_RC(crew_pool_join(p, LONG_WAIT), 0);
    crew_pool_free(p);
}

static void test_free_null(void **state) {
    (void)state;
    crew_pool_free(NULL);
    crew_imap_free(NULL);
    assert_null(crew_pool_current());
    assert_int_equal(crew_pool_task_index(), SIZE_MAX);
}

/* ---------------------------------------------------------------- submit */

/* Results, and the task index: the pool's submission count, from 0. */
static void test_submit_results(void **state) {
    crew_pool *p = pool_with(KIND, 3, 0);
    enum { N = 300 };
    crew_future *fs[N];
    for (int64_t i = 0; i < N; i++) fs[i] = submit_task(p, t_rec, &i, sizeof i, sizeof(rec), NULL);
    for (int64_t i = 0; i < N; i++) {
        rec r = {-1, 0};
        ASSERT_RC(crew_future_get(fs[i], &r, LONG_WAIT), 0);
        assert_int_equal(r.v, f_of(i));
        assert_int_equal(r.index, (uint64_t)i);
        assert_true(crew_future_done(fs[i]));
        assert_false(crew_future_cancelled(fs[i]));
        assert_false(crew_future_running(fs[i]));
        crew_future_free(fs[i]);
    }
    pool_end(p);
}

/* A task's error code is the future's, and no result is copied. */
static void test_submit_error_code(void **state) {
    crew_pool *p = pool_with(KIND, 2, 0);
    const int64_t codes[] = {-4242, CREW_EPERM, CREW_EWORKERDIED - 7};
    for (int k = 0; k < 3; k++) {
        crew_future *f = submit_task(p, t_rec, &codes[k], sizeof codes[k], sizeof(rec), NULL);
        rec r = {555, 666};
        ASSERT_RC(crew_future_get(f, &r, LONG_WAIT), (int)codes[k]);
        assert_int_equal(r.v, 555);
        assert_int_equal(r.index, 666);
        assert_true(crew_future_done(f));
        assert_false(crew_future_cancelled(f));
        ASSERT_RC(crew_future_get(f, NULL, 0), (int)codes[k]); /* and stays so */
        crew_future_free(f);
    }
    get_val(submit_val(p, 5), f_of(5)); /* the pool goes on */
    pool_end(p);
}

/* Callbacks run in the caller's process, so their records work for every
 * kind. */
typedef struct cbrec {
    _Atomic long ok, err;
    _Atomic int64_t last_v;
    _Atomic int last_code;
} cbrec;

static void cb_ok(const void *result, void *arg) {
    cbrec *c = arg;
    int64_t v;
    memcpy(&v, result, sizeof v);
    atomic_store(&c->last_v, v);
    atomic_fetch_add(&c->ok, 1);
}

static void cb_err(int code, void *arg) {
    cbrec *c = arg;
    atomic_store(&c->last_code, code);
    atomic_fetch_add(&c->err, 1);
}

/* callback after success, error_callback after failure, each before get
 * returns; one or the other may be missing. */
static void test_submit_callbacks(void **state) {
    crew_pool *p = pool_with(KIND, 3, 0);
    cbrec c = {0};
    long ok = 0, err = 0;
    for (int64_t i = 0; i < 300; i++) {
        int64_t v = i % 3 == 0 ? -(5000 + i) : i;
        crew_task t = {.fn = t_val, .in = &v, .in_size = sizeof v, .out_size = sizeof v,
                       .callback = cb_ok, .error_callback = cb_err, .callback_arg = &c};
        if (i % 10 == 1) t.error_callback = NULL; /* succeeds */
        if (i % 10 == 2) t.callback = NULL;       /* succeeds: nothing is called */
        if (i % 30 == 3) t.callback = NULL;       /* fails */
        if (i % 30 == 6) t.error_callback = NULL; /* fails: nothing is called */
        crew_future *f = NULL;
        ASSERT_RC(crew_pool_submit(p, &t, &f), 0);
        int64_t got = 0;
        ASSERT_RC(crew_future_get(f, &got, LONG_WAIT), v < 0 ? (int)v : 0);
        if (v >= 0 && t.callback != NULL) {
            ok++;
            assert_int_equal(atomic_load(&c.last_v), f_of(v));
        }
        if (v < 0 && t.error_callback != NULL) {
            err++;
            assert_int_equal(atomic_load(&c.last_code), (int)v);
        }
        assert_int_equal(atomic_load(&c.ok), ok);
        assert_int_equal(atomic_load(&c.err), err);
        crew_future_free(f);
    }
    pool_end(p);
    assert_int_equal(atomic_load(&c.ok), ok);
    assert_int_equal(atomic_load(&c.err), err);
}

/* A pending task is cancelled: it never runs, its callbacks are not
 * called, the worker goes on. A running one cannot be cancelled. */
static void test_submit_cancel_pending(void **state) {
    gates *g = gates_new();
    crew_pool *p = pool_with(KIND, 1, 0);
    crew_future *a = submit_gated(p, g, 1, 0, 0);
    assert_true(TEST_WAIT_UNTIL(crew_future_running(a), SETTLE));

    cbrec c = {0};
    crew_task t = {.fn = t_mark, .ctx = g, .callback = cb_ok, .error_callback = cb_err,
                   .callback_arg = &c};
    crew_future *b = NULL;
    ASSERT_RC(crew_pool_submit(p, &t, &b), 0);
    assert_false(crew_future_running(b));
    ASSERT_RC(crew_future_cancel(b), 0);
    assert_true(crew_future_cancelled(b));
    assert_true(crew_future_done(b));
    ASSERT_RC(crew_future_get(b, NULL, LONG_WAIT), CREW_ECANCELED);
    ASSERT_RC(crew_future_cancel(a), CREW_EBUSY);
    assert_false(crew_future_cancelled(a));

    gate_open(g, 0);
    get_val(a, gate_result(1, 0));
    crew_future *cf = submit_task(p, t_mark, NULL, 0, 0, g);
    ASSERT_RC(crew_future_get(cf, NULL, LONG_WAIT), 0);
    crew_future_free(cf);
    pool_end(p);
    assert_int_equal(atomic_load(&g->marks), 1); /* only the last one ran */
    assert_int_equal(atomic_load(&c.ok), 0);
    assert_int_equal(atomic_load(&c.err), 0);
    crew_future_free(b);
    gates_free(g);
}

/* in_size > 0: the input is copied at submit; the caller reuses its buffer
 * at once. */
static void test_submit_in_copied(void **state) {
    crew_pool *p = pool_with(KIND, 1, 0);
    enum { N = 400 };
    crew_future *fs[N];
    int64_t w[8];
    for (int64_t i = 0; i < N; i++) {
        for (int k = 0; k < 8; k++) w[k] = i * 8 + k;
        fs[i] = submit_task(p, t_sum8, w, sizeof w, sizeof(int64_t), NULL);
        memset(w, 0xff, sizeof w); /* -1 everywhere: t_sum8 would fail */
    }
    for (int64_t i = 0; i < N; i++) get_val(fs[i], 64 * i + 28);
    pool_end(p);
}

/* The same with the task surely pending when the buffer changes; and
 * in_size 0, where the task reads the caller's bytes as they are then. */
static void test_submit_in_copied_while_pending(void **state) {
    gates *g = gates_new();
    g->data = 5;
    crew_pool *p = pool_with(KIND, 1, 0);
    crew_future *a = submit_gated(p, g, 1, 0, 0);
    assert_true(TEST_WAIT_UNTIL(crew_future_running(a), SETTLE));

    int64_t w[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    crew_future *b = submit_task(p, t_sum8, w, sizeof w, sizeof(int64_t), NULL);
    crew_future *c = submit_task(p, t_read_borrowed, &g->data, 0, sizeof(rec), NULL);
    assert_false(crew_future_done(b));
    assert_false(crew_future_running(b));
    memset(w, 0xff, sizeof w);
    g->data = 9; /* before the task starts: it sees 9 */
    gate_open(g, 0);

    get_val(a, gate_result(1, 0));
    get_val(b, 36);
    rec r = {0, 0};
    ASSERT_RC(crew_future_get(c, &r, LONG_WAIT), 0);
    assert_int_equal(r.v, 9);
    assert_int_equal(r.index, (uint64_t)(uintptr_t)&g->data);
    crew_future_free(c);
    pool_end(p);
    gates_free(g);
}

/* in_size 0: `in` reaches the task as it is (never read here). */
static void test_submit_in_size_zero(void **state) {
    crew_pool *p = pool_with(KIND, 2, 0);
    const void *ptrs[] = {(const void *)(uintptr_t)0x5eed0, NULL, (const void *)&zero64};
    for (int k = 0; k < 3; k++) {
        crew_future *f = submit_task(p, t_ptr, ptrs[k], 0, sizeof(rec), NULL);
        rec r = {-1, 0};
        ASSERT_RC(crew_future_get(f, &r, LONG_WAIT), 0);
        assert_int_equal(r.v, (int64_t)(intptr_t)ptrs[k]);
        crew_future_free(f);
    }
    pool_end(p);
}

/* max_pending: submit from outside blocks while that many tasks wait, and
 * resumes when one starts; submits from the pool's own tasks are never
 * held. */
static void test_submit_max_pending(void **state) {
    gates *g = gates_new();
    crew_pool *p = pool_with(KIND, 1, 2);
    crew_future *a = submit_gated(p, g, 1, 0, 4); /* then submits 4 itself */
    assert_true(TEST_WAIT_UNTIL(crew_future_running(a), SETTLE));
    crew_future *b = submit_val(p, 10);
    crew_future *c = submit_val(p, 11);

    int64_t dv = 12;
    crew_task dt = {.fn = t_val, .in = &dv, .in_size = sizeof dv, .out_size = sizeof dv};
    helper h = {.pool = p, .task = &dt};
    helper_start(&h, op_submit);
    assert_blocked(&h);
    assert_false(crew_future_running(b)); /* still two waiting */
    assert_false(crew_future_done(c));

    gate_open(g, 0); /* a's 4 nested submits pass while the queue is full */
    th_join(h.th);
    ASSERT_RC(h.rc, 0);
    get_val(a, gate_result(1, 4));
    get_val(b, f_of(10));
    get_val(c, f_of(11));
    get_val(h.f, f_of(12));
    pool_end(p);
    gates_free(g);
}

/* ------------------------------------------------------------------ map */

static void test_map_chunk_sizes(void **state) {
    crew_pool *p = pool_with(KIND, 3, 0);
    const size_t counts[] = {0, 1, 2, 5, 1000, 10007};
    for (size_t ci = 0; ci < sizeof counts / sizeof counts[0]; ci++) {
        size_t n = counts[ci];
        const size_t chunks[] = {0, 1, 7, 64, n + 5};
        for (size_t k = 0; k < 5; k++) map_check(p, n, chunks[k]);
    }
    pool_end(p);
}

/* in_size 0: fn gets `in` itself for every item; out_size 0: out is NULL. */
static void test_map_sizes_zero(void **state) {
    crew_pool *p = pool_with(KIND, 2, 0);
    const void *sentinel = (const void *)(uintptr_t)0xabc0;
    enum { N = 500 };
    rec out[N];
    crew_map m = {.fn = t_ptr, .in = sentinel, .in_size = 0, .out = out, .out_size = sizeof *out,
                  .count = N, .chunk_size = 3};
    ASSERT_RC(crew_pool_map(p, &m), 0);
    for (size_t i = 0; i < N; i++) {
        assert_int_equal(out[i].v, 0xabc0);
        assert_int_equal(out[i].index, i);
    }
    crew_map m0 = {.fn = t_no_out, .in = NULL, .in_size = 0, .out = NULL, .out_size = 0,
                   .count = N};
    ASSERT_RC(crew_pool_map(p, &m0), 0);
    int64_t in[N];
    for (size_t i = 0; i < N; i++) in[i] = (int64_t)i;
    m0.in = in;
    m0.in_size = sizeof *in;
    m0.chunk_size = 1;
    ASSERT_RC(crew_pool_map(p, &m0), 0);
    pool_end(p);
}

/* One failing item: map returns its code and index. Two: the index is one
 * of them. The pool goes on. */
static void test_map_error_index(void **state) {
    crew_pool *p = pool_with(KIND, 2, 0);
    enum { N = 1000 };
    int64_t in[N];
    rec out[N];
    const size_t chunks[] = {0, 1, 7, 2 * N};
    for (size_t k = 0; k < 4; k++) {
        for (size_t i = 0; i < N; i++) in[i] = (int64_t)i;
        in[637] = -4321;
        size_t failed = SIZE_MAX;
        crew_map m = {.fn = t_rec, .in = in, .in_size = sizeof *in, .out = out,
                      .out_size = sizeof *out, .count = N, .chunk_size = chunks[k],
                      .failed_index = &failed};
        ASSERT_RC(crew_pool_map(p, &m), -4321);
        assert_int_equal(failed, 637);

        in[637] = 637;
        in[100] = in[900] = -4322;
        failed = SIZE_MAX;
        ASSERT_RC(crew_pool_map(p, &m), -4322);
        if (failed != 100 && failed != 900) fail_msg("failed_index %zu, expected 100 or 900", failed);

        m.failed_index = NULL; /* optional */
        ASSERT_RC(crew_pool_map(p, &m), -4322);
    }
    map_check(p, 1000, 0);
    pool_end(p);
}

/* THREADS_ONLY: records in the caller's memory which items started when. */
typedef struct skipctx {
    _Atomic long seq;      /* a clock: one tick per item start and per failure's end */
    _Atomic long ran;
    _Atomic long fail_end; /* the tick right after the first failing item returned */
    long *start;           /* per item: its start tick, -1 if it never ran */
    int64_t fail_from;     /* items from here on fail */
} skipctx;

static void note_fail_end(skipctx *s) {
    long end = atomic_fetch_add(&s->seq, 1);
    long cur = atomic_load(&s->fail_end);
    while (end < cur && !atomic_compare_exchange_weak(&s->fail_end, &cur, end)) {
    }
}

static int t_seq(const void *in, void *out, void *ctx) {
    skipctx *s = ctx;
    int64_t i;
    memcpy(&i, in, sizeof i);
    s->start[i] = atomic_fetch_add(&s->seq, 1);
    atomic_fetch_add(&s->ran, 1);
    if (i >= s->fail_from) {
        note_fail_end(s);
        return -4321;
    }
    memcpy(out, &i, sizeof i);
    return 0;
}

/* THREADS_ONLY: after an item fails, items not yet started do not run, and
 * failed_index is the lowest failing index among those that ran. On one
 * worker this is exact: the worker that ran the failing item records the
 * failure before it takes another one, and an outside caller does not run
 * tasks, so no item starts after the failure. (With more workers another
 * worker may start items while the failing one is between its return and
 * the record, for as long as the scheduler keeps it off a core.) */
static void test_map_failure_skips_rest(void **state) {
    enum { N = 1000 };
    static int64_t in[N], out[N];
    static long start[N];
    crew_pool *p = pool_with(KIND, 1, 0);
    for (int rep = 0; rep < 5; rep++) {
        skipctx s = {.start = start, .fail_from = N / 2};
        atomic_init(&s.fail_end, LONG_MAX);
        for (size_t i = 0; i < N; i++) {
            in[i] = (int64_t)i;
            start[i] = -1;
        }
        size_t failed = SIZE_MAX;
        crew_map m = {.fn = t_seq, .in = in, .in_size = sizeof *in, .out = out,
                      .out_size = sizeof *out, .count = N, .ctx = &s, .chunk_size = 1,
                      .failed_index = &failed};
        ASSERT_RC(crew_pool_map(p, &m), -4321);
        size_t lowest = SIZE_MAX, late = 0, late_first = SIZE_MAX;
        for (size_t i = 0; i < N; i++) {
            if (start[i] < 0) continue;
            if ((int64_t)i >= s.fail_from && lowest == SIZE_MAX) lowest = i;
            if (start[i] > atomic_load(&s.fail_end) && late++ == 0) late_first = i;
        }
        assert_int_equal(failed, lowest);
        if (late != 0)
            fail_msg("%zu items started after the first failure (item %zu first)", late, late_first);
        assert_true(atomic_load(&s.ran) < N);
    }
    pool_end(p);
}

static _Thread_local uint64_t tl_seq; /* items this thread has run (t_where) */

/* out: rec {the thread's kernel id, its item count so far}. */
static int t_where(const void *in, void *out, void *ctx) {
    (void)in;
    (void)ctx;
    rec r = {(int64_t)my_tid(), ++tl_seq};
    memcpy(out, &r, sizeof r);
    return 0;
}

/* Items of one chunk ([k * c, (k + 1) * c) from index 0) ran in one task:
 * on one thread, one after the other, in order. */
static void check_chunks(const rec *out, size_t n, size_t c, const char *what) {
    for (size_t i = 1; i < n; i++) {
        if (i % c == 0) continue;
        if (out[i].v != out[i - 1].v || out[i].index != out[i - 1].index + 1)
            fail_msg("%s, chunk %zu: item %zu ran on thread %lld as its #%llu, item %zu on %lld as "
                     "#%llu",
                     what, c, i - 1, (long long)out[i - 1].v, (unsigned long long)out[i - 1].index,
                     i, (long long)out[i].v, (unsigned long long)out[i].index);
    }
}

/* chunk_size is the number of items per task, for map and imap. */
static void test_chunk_runs_together(void **state) {
    crew_pool *p = pool_with(KIND, 3, 0);
    enum { N = 5003 };
    static rec out[N];
    const size_t chunks[] = {2, 7, 64, 1000};
    for (size_t ck = 0; ck < 4; ck++) {
        crew_map m = {.fn = t_where, .in = NULL, .in_size = 0, .out = out, .out_size = sizeof *out,
                      .count = N, .chunk_size = chunks[ck]};
        ASSERT_RC(crew_pool_map(p, &m), 0);
        check_chunks(out, N, chunks[ck], "map");

        for (int unordered = 0; unordered < 2; unordered++) {
            memset(out, 0, sizeof out);
            crew_imap im = {.fn = t_where, .in = NULL, .count = N, .in_size = 0,
                            .out_size = sizeof(rec), .unordered = unordered,
                            .chunk_size = chunks[ck]};
            crew_imap_iter *it = imap_start(p, &im);
            for (size_t k = 0; k < N; k++) {
                rec r;
                size_t idx = SIZE_MAX;
                ASSERT_RC(crew_imap_next(it, &r, &idx, LONG_WAIT), 0);
                assert_true(idx < N);
                out[idx] = r;
            }
            ASSERT_RC(crew_imap_next(it, NULL, NULL, LONG_WAIT), CREW_EOF);
            crew_imap_free(it);
            check_chunks(out, N, chunks[ck], unordered ? "imap_unordered" : "imap");
        }
    }
    pool_end(p);
}

/* map_async: one future for the whole map; the crew_map struct is copied;
 * the future cannot be cancelled; failed_index is written before it
 * completes. */
static void test_map_async(void **state) {
    crew_pool *p = pool_with(KIND, 3, 0);
    enum { N = 20000 };
    int64_t *in = malloc(N * sizeof *in);
    rec *out = malloc(N * sizeof *out);
    assert_non_null(in);
    assert_non_null(out);
    for (size_t i = 0; i < N; i++) {
        in[i] = (int64_t)i;
        out[i] = (rec){-1, 0};
    }
    size_t failed = 777;
    crew_map m = {.fn = t_rec, .in = in, .in_size = sizeof *in, .out = out, .out_size = sizeof *out,
                  .count = N, .failed_index = &failed};
    crew_future *f = NULL;
    ASSERT_RC(crew_pool_map_async(p, &m, &f), 0);
    ASSERT_RC(crew_future_cancel(f), CREW_EBUSY);
    memset(&m, 0, sizeof m); /* copied: changing it changes nothing */
    ASSERT_RC(crew_future_get(f, NULL, LONG_WAIT), 0);
    assert_false(crew_future_cancelled(f));
    ASSERT_RC(crew_future_cancel(f), CREW_EBUSY);
    crew_future_free(f);
    for (size_t i = 0; i < N; i++)
        if (out[i].v != f_of(in[i]) || out[i].index != i)
            fail_msg("out[%zu] = {%lld, %llu}", i, (long long)out[i].v,
                     (unsigned long long)out[i].index);
    assert_int_equal(failed, 777);

    in[4567] = -4444;
    crew_map m2 = {.fn = t_rec, .in = in, .in_size = sizeof *in, .out = out,
                   .out_size = sizeof *out, .count = N, .chunk_size = 16, .failed_index = &failed};
    ASSERT_RC(crew_pool_map_async(p, &m2, &f), 0);
    ASSERT_RC(crew_future_get(f, NULL, LONG_WAIT), -4444);
    assert_int_equal(failed, 4567);
    crew_future_free(f);

    /* Several at once. */
    crew_future *fs[4];
    rec *outs[4];
    in[4567] = 4567;
    for (int k = 0; k < 4; k++) {
        outs[k] = calloc(N, sizeof(rec));
        assert_non_null(outs[k]);
        crew_map mk = {.fn = t_rec, .in = in, .in_size = sizeof *in, .out = outs[k],
                       .out_size = sizeof(rec), .count = N, .chunk_size = (size_t)k * 5};
        ASSERT_RC(crew_pool_map_async(p, &mk, &fs[k]), 0);
    }
    ASSERT_RC(crew_future_wait(fs, 4, CREW_ALL_COMPLETED, LONG_WAIT), 4);
    for (int k = 0; k < 4; k++) {
        ASSERT_RC(crew_future_get(fs[k], NULL, 0), 0);
        for (size_t i = 0; i < N; i++)
            if (outs[k][i].v != f_of((int64_t)i) || outs[k][i].index != i)
                fail_msg("map %d: out[%zu] = {%lld, %llu}", k, i, (long long)outs[k][i].v,
                         (unsigned long long)outs[k][i].index);
        crew_future_free(fs[k]);
        free(outs[k]);
    }
    free(in);
    free(out);
    pool_end(p);
}

/* ------------------------------------------------------------------ imap */

static void test_imap_ordered(void **state) {
    crew_pool *p = pool_with(KIND, 3, 0);
    enum { N = 3000 };
    int64_t in[N];
    for (size_t i = 0; i < N; i++) in[i] = (int64_t)i * 7 + 3;
    const size_t chunks[] = {0, 1, 7, N + 1000};
    const size_t windows[] = {0, 1, 3, 100};
    for (size_t ck = 0; ck < 4; ck++)
        for (size_t wk = 0; wk < 4; wk++) {
            crew_imap im = {.fn = t_rec, .in = in, .count = N, .in_size = sizeof *in,
                            .out_size = sizeof(rec), .chunk_size = chunks[ck],
                            .window = windows[wk]};
            crew_imap_iter *it = imap_start(p, &im);
            for (size_t i = 0; i < N; i++) {
                rec r = {-1, 0};
                size_t idx = SIZE_MAX;
                bool skip = i % 3 == 0; /* out and index are optional */
                int rc = crew_imap_next(it, skip ? NULL : &r, skip ? NULL : &idx, LONG_WAIT);
                if (rc != 0)
                    fail_msg("chunk %zu window %zu: item %zu: %s", chunks[ck], windows[wk], i,
                             crew_err_name(rc));
                if (!skip && (idx != i || r.v != f_of(in[i]) || r.index != i))
                    fail_msg("chunk %zu window %zu: item %zu came as index %zu {%lld, %llu}",
                             chunks[ck], windows[wk], i, idx, (long long)r.v,
                             (unsigned long long)r.index);
            }
            ASSERT_RC(crew_imap_next(it, NULL, NULL, LONG_WAIT), CREW_EOF);
            ASSERT_RC(crew_imap_next(it, NULL, NULL, SHORT), CREW_EOF);
            crew_imap_free(it);
        }
    crew_imap im0 = {.fn = t_rec, .in = in, .count = 0, .in_size = sizeof *in,
                     .out_size = sizeof(rec)};
    crew_imap_iter *it = imap_start(p, &im0);
    ASSERT_RC(crew_imap_next(it, NULL, NULL, LONG_WAIT), CREW_EOF);
    crew_imap_free(it);
    pool_end(p);
}

static void test_imap_unordered(void **state) {
    crew_pool *p = pool_with(KIND, 3, 0);
    enum { N = 5000 };
    int64_t in[N];
    unsigned char seen[N];
    for (size_t i = 0; i < N; i++) in[i] = (int64_t)i * 5 + 2;
    const size_t chunks[] = {0, 1, 7};
    for (size_t ck = 0; ck < 3; ck++) {
        memset(seen, 0, sizeof seen);
        crew_imap im = {.fn = t_rec, .in = in, .count = N, .in_size = sizeof *in,
                        .out_size = sizeof(rec), .unordered = true, .chunk_size = chunks[ck]};
        crew_imap_iter *it = imap_start(p, &im);
        for (size_t k = 0; k < N; k++) {
            rec r = {-1, 0};
            size_t idx = SIZE_MAX;
            ASSERT_RC(crew_imap_next(it, &r, &idx, LONG_WAIT), 0);
            if (idx >= N || seen[idx]++ != 0)
                fail_msg("chunk %zu: index %zu out of range or seen twice", chunks[ck], idx);
            if (r.v != f_of(in[idx]) || r.index != idx)
                fail_msg("chunk %zu: index %zu got {%lld, %llu}", chunks[ck], idx,
                         (long long)r.v, (unsigned long long)r.index);
        }
        ASSERT_RC(crew_imap_next(it, NULL, NULL, LONG_WAIT), CREW_EOF);
        crew_imap_free(it);
    }
    pool_end(p);
}

/* Lazy input: counts what was taken and what was returned, and checks the
 * window on every take. Runs in the consumer's thread only. */
typedef struct lazy {
    size_t n;            /* items to give */
    size_t fail_at;      /* SIZE_MAX, or: return fail_code for this index */
    int fail_code;
    size_t window;       /* the bound to check */
    size_t taken;        /* items given */
    size_t returned;     /* results crew_imap_next returned */
    bool in_next;        /* a crew_imap_next call is in progress */
    size_t peak;         /* the most taken - returned seen at a take */
    size_t bad_index;    /* calls whose index was not `taken` */
    size_t other_thread; /* calls from a thread other than `consumer` */
    pthread_t consumer;
} lazy;

static void lazy_init(lazy *l, size_t n, size_t window) {
    memset(l, 0, sizeof *l);
    l->n = n;
    l->fail_at = SIZE_MAX;
    l->window = window;
    l->consumer = pthread_self();
}

static int64_t lazy_value(size_t index) { return (int64_t)index * 5 + 1; }

static int lazy_input(void *item, size_t index, void *arg) {
    lazy *l = arg;
    if (!pthread_equal(pthread_self(), l->consumer)) l->other_thread++;
    if (index != l->taken) l->bad_index++;
    if (index == l->fail_at) return l->fail_code;
    if (index >= l->n) return 0;
    int64_t v = lazy_value(index);
    memcpy(item, &v, sizeof v);
    l->taken++;
    /* The call in progress may be returning one item already counted. */
    size_t held = l->taken - l->returned - (l->in_next ? 1 : 0);
    if (held > l->peak) l->peak = held;
    return 1;
}

static int lazy_next(lazy *l, crew_imap_iter *it, rec *r, size_t *idx) {
    l->in_next = true;
    int rc = crew_imap_next(it, r, idx, LONG_WAIT);
    l->in_next = false;
    if (rc == 0) l->returned++;
    return rc;
}

/* Progress records (a callback runs in the caller's process). */
typedef struct prog {
    size_t total;         /* expected final total */
    bool lazy;            /* total 0 until the input ends */
    _Atomic int active;   /* inside a call */
    _Atomic long calls;
    _Atomic size_t last_done, last_total;
    _Atomic long overlaps, decreases, bad_totals, over;
} prog;

static void prog_cb(size_t done, size_t total, void *arg) {
    prog *pr = arg;
    if (atomic_exchange(&pr->active, 1) != 0) atomic_fetch_add(&pr->overlaps, 1);
    long c = atomic_fetch_add(&pr->calls, 1);
    if (c > 0 && done < atomic_load(&pr->last_done)) atomic_fetch_add(&pr->decreases, 1);
    bool total_ok = total == pr->total || (pr->lazy && total == 0 &&
                                           (c == 0 || atomic_load(&pr->last_total) == 0));
    if (!total_ok) atomic_fetch_add(&pr->bad_totals, 1);
    if (total != 0 && done > total) atomic_fetch_add(&pr->over, 1);
    atomic_store(&pr->last_done, done);
    atomic_store(&pr->last_total, total);
    atomic_store(&pr->active, 0);
}

static void prog_init(prog *pr, size_t total, bool is_lazy) {
    memset(pr, 0, sizeof *pr);
    pr->total = total;
    pr->lazy = is_lazy;
}

static void prog_check(prog *pr, const char *what) {
    if (!TEST_WAIT_UNTIL(atomic_load(&pr->last_done) == pr->total &&
                             atomic_load(&pr->last_total) == pr->total,
                         SETTLE))
        fail_msg("%s: the last progress call was %zu of %zu, expected %zu of %zu (%ld calls)", what,
                 atomic_load(&pr->last_done), atomic_load(&pr->last_total), pr->total, pr->total,
                 atomic_load(&pr->calls));
    if (atomic_load(&pr->overlaps) || atomic_load(&pr->decreases) || atomic_load(&pr->bad_totals) ||
        atomic_load(&pr->over))
        fail_msg("%s: progress calls: %ld overlapping, %ld decreasing, %ld with a wrong total, %ld "
                 "with done > total",
                 what, atomic_load(&pr->overlaps), atomic_load(&pr->decreases),
                 atomic_load(&pr->bad_totals), atomic_load(&pr->over));
}

static long status_kb(const char *field) {
    char buf[4096];
    if (!read_small("/proc/self/status", buf, sizeof buf)) return -1;
    const char *s = strstr(buf, field);
    if (s == NULL) return -1;
    return strtol(s + strlen(field), NULL, 10);
}

/* Lower the peak RSS to the current RSS (Linux >= 4.0); false if not. */
static bool reset_peak_rss(void) {
    int fd = open("/proc/self/clear_refs", O_WRONLY | O_CLOEXEC);
    if (fd < 0) return false;
    bool ok = write(fd, "5", 1) == 1;
    close(fd);
    return ok;
}

/* One lazy run: n items, ordered; the window holds, results are right, and
 * (unsanitized) the peak RSS stays flat. */
static void lazy_run(crew_pool *p, size_t n, size_t chunk, size_t window, bool unordered,
                     bool measure) {
    size_t eff_chunk = chunk ? chunk : 1;
    size_t bound = window ? window : 8 * eff_chunk * crew_pool_workers(p);
    unsigned char *seen = NULL;
    if (unordered) {
        seen = calloc(n, 1);
        assert_non_null(seen);
    }
    lazy l;
    lazy_init(&l, n, bound);
    prog pr;
    prog_init(&pr, n, true);
    long hwm0 = -1;
    if (measure) {
        (void)reset_peak_rss(); /* if it cannot, the earlier peak only hides growth */
        hwm0 = status_kb("VmHWM:");
    }
    double t0 = test_now();
    crew_imap im = {.fn = t_rec, .input = lazy_input, .input_arg = &l, .in_size = sizeof(int64_t),
                    .out_size = sizeof(rec), .unordered = unordered, .chunk_size = chunk,
                    .window = window, .progress = prog_cb, .progress_arg = &pr};
    crew_imap_iter *it = imap_start(p, &im);
    if (n > 0 && l.taken == 0) fail_msg("crew_pool_imap took no input item");
    size_t wrong = 0, first_wrong = SIZE_MAX;
    for (size_t k = 0; k < n; k++) {
        rec r;
        size_t idx = SIZE_MAX;
        int rc = lazy_next(&l, it, &r, &idx);
        if (rc != 0) fail_msg("item %zu of %zu: %s", k, n, crew_err_name(rc));
        bool ok = idx < n && r.v == f_of(lazy_value(idx)) && r.index == idx;
        if (unordered) ok = ok && seen[idx]++ == 0;
        else ok = ok && idx == k;
        if (!ok && wrong++ == 0) first_wrong = k;
    }
    ASSERT_RC(lazy_next(&l, it, NULL, NULL), CREW_EOF);
    double dt = test_now() - t0;
    long hwm1 = measure ? status_kb("VmHWM:") : -1;
    prog_check(&pr, "lazy imap");
    crew_imap_free(it);
    free(seen);
    if (wrong != 0) fail_msg("%zu wrong results, the first at %zu", wrong, first_wrong);
    assert_int_equal(l.taken, n);
    assert_int_equal(l.bad_index, 0);
    assert_int_equal(l.other_thread, 0);
    if (l.peak > bound)
        fail_msg("%zu items taken and not yet returned, the window is %zu", l.peak, bound);
    printf("  lazy imap: %zu items, chunk %zu, window %zu: %.2f s, peak held %zu", n, chunk, bound,
           dt, l.peak);
    if (measure && hwm0 > 0 && hwm1 > 0) {
        printf(", peak RSS +%ld kB", hwm1 - hwm0);
        if (hwm1 - hwm0 > 16 * 1024)
            fail_msg("peak RSS grew by %ld kB over %zu items (from %ld kB)", hwm1 - hwm0, n, hwm0);
    }
    printf("\n");
}

/* Lazy input over 10 million items: taken-but-not-returned never exceeds
 * the window, and memory stays flat. */
static void test_imap_lazy_bounded(void **state) {
    crew_pool *p = pool_with(KIND, 2, 0);
    bool measure = true;
#ifdef TEST_SANITIZED
    measure = false; /* allocator quarantine and shadow memory hide it */
#endif
    lazy_run(p, 2000, 1, 0, false, false); /* warm up */
    lazy_run(p, (size_t)test_scaled(10000000), 256, 0, false, measure);
    lazy_run(p, (size_t)test_scaled(200000), 1, 16, false, false);
    lazy_run(p, (size_t)test_scaled(100000), 7, 100, true, false);
    lazy_run(p, 1000, 0, 1, false, false);
    lazy_run(p, 1000, 0, 0, true, false);
    pool_end(p);
}

/* A failed item's code comes with its index, and the stream goes on. */
static void test_imap_error_items(void **state) {
    crew_pool *p = pool_with(KIND, 3, 0);
    enum { N = 40 };
    int64_t in[N];
    for (size_t i = 0; i < N; i++) in[i] = (int64_t)i;
    in[5] = -4301;
    in[9] = -4302;
    in[30] = -4303;
    const size_t chunks[] = {0, 1, 3};
    for (int unordered = 0; unordered < 2; unordered++)
        for (size_t ck = 0; ck < 3; ck++) {
            crew_imap im = {.fn = t_rec, .in = in, .count = N, .in_size = sizeof *in,
                            .out_size = sizeof(rec), .unordered = unordered,
                            .chunk_size = chunks[ck]};
            crew_imap_iter *it = imap_start(p, &im);
            unsigned char seen[N] = {0};
            for (size_t k = 0; k < N; k++) {
                rec r = {-1, 0};
                size_t idx = SIZE_MAX;
                int rc = crew_imap_next(it, &r, &idx, LONG_WAIT);
                if (idx >= N || seen[idx]++ != 0 || (!unordered && idx != k))
                    fail_msg("unordered %d chunk %zu: call %zu gave index %zu (%s)", unordered,
                             chunks[ck], k, idx, crew_err_name(rc));
                int want = in[idx] < 0 ? (int)in[idx] : 0;
                if (rc != want)
                    fail_msg("unordered %d chunk %zu: index %zu gave %d (%s), expected %d",
                             unordered, chunks[ck], idx, rc, crew_err_name(rc), want);
                if (rc == 0 && r.v != f_of(in[idx]))
                    fail_msg("index %zu: %lld", idx, (long long)r.v);
            }
            ASSERT_RC(crew_imap_next(it, NULL, NULL, LONG_WAIT), CREW_EOF);
            crew_imap_free(it);
        }
    pool_end(p);
}

/* The input callback's error ends the input: the items before it come, the
 * code comes once, then CREW_EOF. */
static void test_imap_input_error(void **state) {
    crew_pool *p = pool_with(KIND, 2, 0);
    const size_t chunks[] = {1, 3};
    for (int unordered = 0; unordered < 2; unordered++)
        for (size_t ck = 0; ck < 2; ck++) {
            lazy l;
            lazy_init(&l, 1000, 4);
            l.fail_at = 10;
            l.fail_code = -4400;
            crew_imap im = {.fn = t_rec, .input = lazy_input, .input_arg = &l,
                            .in_size = sizeof(int64_t), .out_size = sizeof(rec),
                            .unordered = unordered, .chunk_size = chunks[ck], .window = 4};
            crew_imap_iter *it = imap_start(p, &im);
            unsigned char seen[10] = {0};
            size_t got = 0, errors = 0, last = 0;
            int rc = 0;
            for (int calls = 0; calls < 100; calls++) {
                rec r;
                size_t idx = SIZE_MAX;
                rc = lazy_next(&l, it, &r, &idx);
                if (rc == CREW_EOF) break;
                if (rc == -4400) {
                    errors++;
                    continue;
                }
                if (rc != 0) fail_msg("imap_next: %s", crew_err_name(rc));
                if (idx >= 10 || seen[idx]++ != 0 || r.v != f_of(lazy_value(idx)))
                    fail_msg("index %zu (value %lld) out of range or twice", idx, (long long)r.v);
                if (!unordered && got > 0 && idx <= last) fail_msg("index %zu after %zu", idx, last);
                last = idx;
                got++;
            }
            ASSERT_RC(rc, CREW_EOF);
            assert_int_equal(got, 10);
            assert_int_equal(errors, 1);
            ASSERT_RC(crew_imap_next(it, NULL, NULL, SHORT), CREW_EOF);
            crew_imap_free(it);
            assert_int_equal(l.other_thread, 0);
        }
    pool_end(p);
}

/* crew_imap_next times out while the next result is held; it comes after. */
static void test_imap_timeout(void **state) {
    gates *g = gates_new();
    crew_pool *p = pool_with(KIND, 1, 0);
    for (int unordered = 0; unordered < 2; unordered++) {
        ASSERT_RC(crew_event_clear(&g->ev[0]), 0);
        atomic_store(&g->started, 0);
        gitem items[3] = {{1, 0, 0}, {2, -1, 0}, {3, -1, 0}};
        crew_imap im = {.fn = t_gate, .ctx = g, .in = items, .count = 3, .in_size = sizeof *items,
                        .out_size = sizeof(int64_t), .unordered = unordered, .chunk_size = 1};
        crew_imap_iter *it = imap_start(p, &im);
        assert_true(TEST_WAIT_UNTIL(atomic_load(&g->started) >= 1, SETTLE));
        int64_t v = -1;
        size_t idx = SIZE_MAX;
        double t0 = test_now();
        ASSERT_RC(crew_imap_next(it, &v, &idx, SHORT), CREW_ETIMEDOUT);
        ASSERT_ELAPSED(test_now() - t0, SHORT);
        ASSERT_RC(crew_imap_next(it, &v, &idx, 0), CREW_ETIMEDOUT);
        assert_int_equal(v, -1);
        gate_open(g, 0);
        unsigned seen = 0;
        for (size_t k = 0; k < 3; k++) {
            ASSERT_RC(crew_imap_next(it, &v, &idx, LONG_WAIT), 0);
            assert_true(idx < 3);
            if (!unordered) assert_int_equal(idx, k);
            assert_int_equal(v, gate_result(items[idx].v, 0));
            seen |= 1u << idx;
        }
        assert_int_equal(seen, 7);
        ASSERT_RC(crew_imap_next(it, &v, &idx, LONG_WAIT), CREW_EOF);
        crew_imap_free(it);
    }
    pool_end(p);
    gates_free(g);
}

/* Freeing an iterator mid-stream (or before any next) returns, leaks
 * nothing, takes no more input, and leaves the pool working. */
static void test_imap_free_midstream(void **state) {
    crew_pool *p = pool_with(KIND, 2, 0);
    enum { N = 100000 };
    int64_t *in = malloc(N * sizeof *in);
    assert_non_null(in);
    for (size_t i = 0; i < N; i++) in[i] = (int64_t)i;
    for (int unordered = 0; unordered < 2; unordered++) {
        crew_imap im = {.fn = t_rec, .in = in, .count = N, .in_size = sizeof *in,
                        .out_size = sizeof(rec), .unordered = unordered,
                        .chunk_size = unordered ? 7 : 1};
        crew_imap_iter *it = imap_start(p, &im);
        for (size_t k = 0; k < 10; k++) ASSERT_RC(crew_imap_next(it, NULL, NULL, LONG_WAIT), 0);
        crew_imap_free(it);
        crew_imap_free(imap_start(p, &im)); /* not one next */

        lazy l;
        lazy_init(&l, SIZE_MAX, 0);
        crew_imap lim = {.fn = t_rec, .input = lazy_input, .input_arg = &l,
                         .in_size = sizeof(int64_t), .out_size = sizeof(rec),
                         .unordered = unordered, .window = 32};
        it = imap_start(p, &lim);
        for (size_t k = 0; k < 10; k++) ASSERT_RC(lazy_next(&l, it, NULL, NULL), 0);
        crew_imap_free(it);
        assert_true(l.taken <= 10 + 32 + 1);
        assert_int_equal(l.other_thread, 0);
    }
    map_check(p, 1000, 0);
    free(in);
    pool_end(p);
}

/* crew_imap_free waits for the running items. */
static void test_imap_free_waits_running(void **state) {
    gates *g = gates_new();
    crew_pool *p = pool_with(KIND, 2, 0);
    gitem items[4] = {{1, 0, 0}, {2, -1, 0}, {3, -1, 0}, {4, -1, 0}};
    crew_imap im = {.fn = t_gate, .ctx = g, .in = items, .count = 4, .in_size = sizeof *items,
                    .out_size = sizeof(int64_t), .chunk_size = 1};
    crew_imap_iter *it = imap_start(p, &im);
    assert_true(TEST_WAIT_UNTIL(atomic_load(&g->started) >= 1, SETTLE));
    helper h = {.it = it, .g = g, .seen = -1};
    helper_start(&h, op_imap_free);
    assert_blocked(&h);
    gate_open(g, 0);
    th_join(h.th);
    assert_int_equal(h.seen, 0); /* everything started had finished */
    assert_true(atomic_load(&g->finished) >= 1);
    map_check(p, 100, 0);
    pool_end(p);
    gates_free(g);
}

/* ------------------------------------------------------------------- for */

/* In a MAP_SHARED mapping: one counter per iteration. */
typedef struct for_area {
    size_t begin, end;
    _Atomic long calls, out_of_range;
    _Atomic size_t min_len;
    _Atomic uint32_t count[];
} for_area;

static int b_count(size_t b, size_t e, void *ctx) {
    for_area *a = ctx;
    if (b >= e || b < a->begin || e > a->end) {
        atomic_fetch_add(&a->out_of_range, 1);
        return 0;
    }
    atomic_fetch_add(&a->calls, 1);
    size_t len = e - b, cur = atomic_load(&a->min_len);
    while (len < cur && !atomic_compare_exchange_weak(&a->min_len, &cur, len)) {
    }
    for (size_t i = b; i < e; i++) atomic_fetch_add_explicit(&a->count[i - a->begin], 1, memory_order_relaxed);
    return 0;
}

/* Every iteration exactly once, in range, for several grains; a grain as
 * large as the range means one call; no sub-range is smaller than the grain
 * (unless the whole range is). */
static void test_for_each_once(void **state) {
    enum { NMAX = 100003 };
    size_t bytes = sizeof(for_area) + NMAX * sizeof(uint32_t);
    for_area *a = shm_map(bytes);
    crew_pool *p = pool_with(KIND, 3, 0);
    const size_t ns[] = {0, 1, 2, 1023, NMAX};
    for (size_t nk = 0; nk < 5; nk++) {
        size_t n = ns[nk];
        const size_t grains[] = {0, 1, 3, 64, n, n + 1};
        for (size_t gk = 0; gk < 6; gk++) {
            size_t grain = grains[gk];
            a->begin = 1000;
            a->end = 1000 + n;
            atomic_store(&a->calls, 0);
            atomic_store(&a->out_of_range, 0);
            atomic_store(&a->min_len, SIZE_MAX);
            memset((void *)a->count, 0, NMAX * sizeof(uint32_t));
            crew_for l = {.begin = a->begin, .end = a->end, .body = b_count, .ctx = a,
                          .grain = grain};
            ASSERT_RC(crew_pool_for(p, &l), 0);
            assert_int_equal(atomic_load(&a->out_of_range), 0);
            for (size_t i = 0; i < n; i++)
                if (atomic_load(&a->count[i]) != 1)
                    fail_msg("n %zu grain %zu: iteration %zu ran %u times", n, grain, 1000 + i,
                             (unsigned)atomic_load(&a->count[i]));
            if (n == 0) assert_int_equal(atomic_load(&a->calls), 0);
            if (n > 0 && grain >= n) assert_int_equal(atomic_load(&a->calls), 1);
            if (n > 0 && grain > 0 && grain <= n && atomic_load(&a->min_len) < grain)
                fail_msg("n %zu grain %zu: a sub-range of %zu iterations", n, grain,
                         atomic_load(&a->min_len));
        }
    }
    pool_end(p);
    shm_unmap(a, bytes);
}

/* A body that contains iteration 777 fails: for returns its code. */
static int b_fail_777(size_t b, size_t e, void *ctx) {
    (void)ctx;
    return b <= 777 && 777 < e ? -4500 : 0;
}

static void test_for_error(void **state) {
    crew_pool *p = pool_with(KIND, 2, 0);
    const size_t grains[] = {0, 1, 10, 100000};
    for (size_t gk = 0; gk < 4; gk++) {
        crew_for l = {.begin = 0, .end = 100000, .body = b_fail_777, .grain = grains[gk]};
        ASSERT_RC(crew_pool_for(p, &l), -4500);
        l.begin = 778; /* without it: fine */
        ASSERT_RC(crew_pool_for(p, &l), 0);
    }
    pool_end(p);
}

/* THREADS_ONLY: after a body fails, sub-ranges not yet started are skipped;
 * exact on one worker, as for map. */
typedef struct forskip {
    _Atomic long seq, calls, fail_end;
    long starts[1 << 16];
    _Atomic size_t slot;
} forskip;

static int b_seq_fail(size_t b, size_t e, void *ctx) {
    forskip *s = ctx;
    long t = atomic_fetch_add(&s->seq, 1);
    size_t k = atomic_fetch_add(&s->slot, 1);
    if (k < (1u << 16)) s->starts[k] = t;
    atomic_fetch_add(&s->calls, 1);
    if (b <= 50000 && 50000 < e) {
        long end = atomic_fetch_add(&s->seq, 1);
        long cur = atomic_load(&s->fail_end);
        while (end < cur && !atomic_compare_exchange_weak(&s->fail_end, &cur, end)) {
        }
        return -4501;
    }
    return 0;
}

static void test_for_failure_skips_rest(void **state) {
    crew_pool *p = pool_with(KIND, 1, 0);
    const size_t grains[] = {1, 100};
    for (size_t gk = 0; gk < 2; gk++) {
        forskip *s = calloc(1, sizeof *s);
        assert_non_null(s);
        atomic_store(&s->fail_end, LONG_MAX);
        crew_for l = {.begin = 0, .end = 100000, .body = b_seq_fail, .ctx = s,
                      .grain = grains[gk]};
        ASSERT_RC(crew_pool_for(p, &l), -4501);
        size_t n = atomic_load(&s->slot), late = 0;
        assert_true(n < (1u << 16));
        for (size_t i = 0; i < n; i++)
            if (s->starts[i] > atomic_load(&s->fail_end)) late++;
        if (late != 0)
            fail_msg("grain %zu: %zu sub-ranges started after the failure", grains[gk], late);
        free(s);
    }
    pool_end(p);
}

/* ---------------------------------------------------------------- reduce */

static int64_t sq_mod(size_t i) { return (int64_t)((i * i) % 1000003u); }

static int r_sum_sq(size_t b, size_t e, void *acc, void *ctx) {
    (void)ctx;
    int64_t s;
    memcpy(&s, acc, sizeof s);
    for (size_t i = b; i < e; i++) s += sq_mod(i);
    memcpy(acc, &s, sizeof s);
    return 0;
}

static void test_reduce_int_sum(void **state) {
    crew_pool *p = pool_with(KIND, 3, 0);
    const size_t begin = 5, n = 100000;
    int64_t want = 0;
    for (size_t i = begin; i < begin + n; i++) want += sq_mod(i);
    const size_t grains[] = {0, 1, 7, 1000, n + 1};
    for (size_t gk = 0; gk < 5; gk++) {
        int64_t got = -1;
        crew_reduce r = {.begin = begin, .end = begin + n, .body = r_sum_sq, .combine = c_add_i64,
                         .identity = &zero64, .size = sizeof got, .result = &got,
                         .grain = grains[gk]};
        ASSERT_RC(crew_pool_reduce(p, &r), 0);
        assert_int_equal(got, want);
    }
    pool_end(p);
}

/* Values of both signs over 40 binary orders of magnitude: their float sum
 * depends on the order of additions. */
static double wide_value(size_t i) {
    crew_rng r;
    crew_rng_init(&r, 99, i);
    double u = crew_rng_uniform(&r) + 0.5;
    int e = (int)crew_rng_below(&r, 41) - 20;
    double scale = e >= 0 ? (double)(1ull << e) : 1.0 / (double)(1ull << -e);
    return (crew_rng_u32(&r) & 1 ? -u : u) * scale;
}

static int r_fsum(size_t b, size_t e, void *acc, void *ctx) {
    (void)ctx;
    double s;
    memcpy(&s, acc, sizeof s);
    for (size_t i = b; i < e; i++) s += wide_value(i);
    memcpy(acc, &s, sizeof s);
    return 0;
}

static void c_fadd(void *acc, const void *other, void *ctx) {
    (void)ctx;
    double a, b;
    memcpy(&a, acc, sizeof a);
    memcpy(&b, other, sizeof b);
    a += b;
    memcpy(acc, &a, sizeof a);
}

/* The same bits whatever the number of workers or the schedule. */
static void test_reduce_float_identical(void **state) {
    const size_t n = 200003;
    double seq = 0, mag = 0;
    for (size_t i = 0; i < n; i++) {
        seq += wide_value(i);
        mag += wide_value(i) < 0 ? -wide_value(i) : wide_value(i);
    }
    const size_t ws[] = {1, 2, 3, 8};
    const size_t grains[] = {0, 1000, 4096};
    double first[3] = {0, 0, 0};
    for (size_t wk = 0; wk < 4; wk++) {
        crew_pool *p = pool_with(KIND, ws[wk], 0);
        for (size_t gk = 0; gk < 3; gk++)
            for (int rep = 0; rep < 2; rep++) {
                double got = NAN;
                const double fzero = 0.0;
                crew_reduce r = {.begin = 0, .end = n, .body = r_fsum, .combine = c_fadd,
                                 .identity = &fzero, .size = sizeof got, .result = &got,
                                 .grain = grains[gk]};
                ASSERT_RC(crew_pool_reduce(p, &r), 0);
                double diff = got - seq;
                if (!(diff < 1e-9 * mag && -diff < 1e-9 * mag))
                    fail_msg("grain %zu: sum %.17g, sequential %.17g", grains[gk], got, seq);
                if (wk == 0 && rep == 0) first[gk] = got;
                else if (memcmp(&got, &first[gk], sizeof got) != 0)
                    fail_msg("grain %zu, %zu workers: %a, with 1 worker %a", grains[gk], ws[wk], got,
                             first[gk]);
            }
        pool_end(p);
    }
}

/* An associative, non-commutative fold: the contiguous interval covered.
 * It shows a gap, an overlap or a swapped combine. */
typedef struct interval {
    int64_t lo, hi;
    int32_t empty, bad;
} interval;

static int r_interval(size_t b, size_t e, void *acc, void *ctx) {
    (void)ctx;
    interval a;
    memcpy(&a, acc, sizeof a);
    if (a.empty) a = (interval){(int64_t)b, (int64_t)e, 0, a.bad};
    else if (a.hi == (int64_t)b) a.hi = (int64_t)e;
    else a.bad = 1;
    memcpy(acc, &a, sizeof a);
    return 0;
}

static void c_interval(void *acc, const void *other, void *ctx) {
    (void)ctx;
    interval a, o;
    memcpy(&a, acc, sizeof a);
    memcpy(&o, other, sizeof o);
    if (o.empty) a.bad |= o.bad;
    else if (a.empty) a = (interval){o.lo, o.hi, 0, a.bad | o.bad};
    else if (a.hi == o.lo) a = (interval){a.lo, o.hi, 0, a.bad | o.bad};
    else a.bad = 1;
    memcpy(acc, &a, sizeof a);
}

static const interval no_interval = {-5, -6, 1, 0};

/* Combines keep the order of the range; an empty range gives the identity. */
static void test_reduce_order_and_empty(void **state) {
    crew_pool *p = pool_with(KIND, 3, 0);
    const size_t grains[] = {0, 1, 7, 5000};
    for (size_t gk = 0; gk < 4; gk++) {
        interval got = {0, 0, 0, 7};
        crew_reduce r = {.begin = 10, .end = 50010, .body = r_interval, .combine = c_interval,
                         .identity = &no_interval, .size = sizeof got, .result = &got,
                         .grain = grains[gk]};
        ASSERT_RC(crew_pool_reduce(p, &r), 0);
        if (got.empty || got.bad || got.lo != 10 || got.hi != 50010)
            fail_msg("grain %zu: {%lld, %lld, empty %d, bad %d}", grains[gk], (long long)got.lo,
                     (long long)got.hi, got.empty, got.bad);
        r.begin = r.end = 42;
        memset(&got, 0x5a, sizeof got);
        ASSERT_RC(crew_pool_reduce(p, &r), 0);
        assert_memory_equal(&got, &no_interval, sizeof got);
    }
    pool_end(p);
}

static int r_fail_333(size_t b, size_t e, void *acc, void *ctx) {
    (void)acc;
    (void)ctx;
    return b <= 333 && 333 < e ? -4600 : 0;
}

static void test_reduce_error(void **state) {
    crew_pool *p = pool_with(KIND, 2, 0);
    const size_t grains[] = {0, 1, 100};
    for (size_t gk = 0; gk < 3; gk++) {
        int64_t got = 0;
        crew_reduce r = {.begin = 0, .end = 10000, .body = r_fail_333, .combine = c_add_i64,
                         .identity = &zero64, .size = sizeof got, .result = &got,
                         .grain = grains[gk]};
        ASSERT_RC(crew_pool_reduce(p, &r), -4600);
        r.end = 333;
        ASSERT_RC(crew_pool_reduce(p, &r), 0);
    }
    pool_end(p);
}

/* -------------------------------------------------------------- progress */

static void test_progress(void **state) {
    crew_pool *p = pool_with(KIND, 3, 0);
    enum { N = 3000 };
    int64_t in[N];
    rec out[N];
    for (size_t i = 0; i < N; i++) in[i] = (int64_t)i;
    prog pr;

    const size_t chunks[] = {0, 1, 64};
    for (size_t ck = 0; ck < 3; ck++) {
        prog_init(&pr, N, false);
        crew_map m = {.fn = t_rec, .in = in, .in_size = sizeof *in, .out = out,
                      .out_size = sizeof *out, .count = N, .chunk_size = chunks[ck],
                      .progress = prog_cb, .progress_arg = &pr};
        ASSERT_RC(crew_pool_map(p, &m), 0);
        prog_check(&pr, "map");

        prog_init(&pr, N, false);
        crew_future *f = NULL;
        ASSERT_RC(crew_pool_map_async(p, &m, &f), 0);
        ASSERT_RC(crew_future_get(f, NULL, LONG_WAIT), 0);
        crew_future_free(f);
        prog_check(&pr, "map_async");
    }

    const size_t grains[] = {0, 1, 100};
    for (size_t gk = 0; gk < 3; gk++) {
        prog_init(&pr, 50000, false);
        crew_for l = {.begin = 7, .end = 50007, .body = b_nop, .grain = grains[gk],
                      .progress = prog_cb, .progress_arg = &pr};
        ASSERT_RC(crew_pool_for(p, &l), 0);
        prog_check(&pr, "for");

        prog_init(&pr, 50000, false);
        int64_t got = 0;
        crew_reduce r = {.begin = 0, .end = 50000, .body = r_sum_sq, .combine = c_add_i64,
                         .identity = &zero64, .size = sizeof got, .result = &got,
                         .grain = grains[gk], .progress = prog_cb, .progress_arg = &pr};
        ASSERT_RC(crew_pool_reduce(p, &r), 0);
        prog_check(&pr, "reduce");
    }

    for (int unordered = 0; unordered < 2; unordered++) {
        prog_init(&pr, N, false);
        crew_imap im = {.fn = t_rec, .in = in, .count = N, .in_size = sizeof *in,
                        .out_size = sizeof(rec), .unordered = unordered, .chunk_size = 3,
                        .progress = prog_cb, .progress_arg = &pr};
        crew_imap_iter *it = imap_start(p, &im);
        for (size_t k = 0; k < N; k++) ASSERT_RC(crew_imap_next(it, NULL, NULL, LONG_WAIT), 0);
        ASSERT_RC(crew_imap_next(it, NULL, NULL, LONG_WAIT), CREW_EOF);
        prog_check(&pr, "imap");
        crew_imap_free(it);
    }
    pool_end(p);
}

/* crew_progress_bar writes nothing when stderr is not a terminal. */
static void test_progress_bar_quiet(void **state) {
    crew_pool *p = pool_with(KIND, 2, 0);
    enum { N = 2000 };
    int64_t in[N];
    rec out[N];
    for (size_t i = 0; i < N; i++) in[i] = (int64_t)i;
    char path[] = "/tmp/crew-test-pool-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    unlink(path);
    fflush(stderr);
    int saved = dup(2);
    assert_true(saved >= 0);
    assert_true(dup2(fd, 2) == 2);

    crew_map m = {.fn = t_rec, .in = in, .in_size = sizeof *in, .out = out, .out_size = sizeof *out,
                  .count = N, .chunk_size = 1, .progress = crew_progress_bar,
                  .progress_arg = (void *)"squares"};
    int rc_map = crew_pool_map(p, &m);
    crew_for l = {.begin = 0, .end = 100000, .body = b_nop, .progress = crew_progress_bar};
    int rc_for = crew_pool_for(p, &l);
    crew_progress_bar(0, 0, NULL);
    crew_progress_bar(5, 10, (void *)"label");
    crew_progress_bar(10, 10, NULL);
    crew_progress_bar(SIZE_MAX, SIZE_MAX, (void *)"");

    fflush(stderr);
    assert_true(dup2(saved, 2) == 2);
    close(saved);
    struct stat st;
    assert_int_equal(fstat(fd, &st), 0);
    close(fd);
    ASSERT_RC(rc_map, 0);
    ASSERT_RC(rc_for, 0);
    assert_int_equal(st.st_size, 0);
    for (size_t i = 0; i < N; i++) assert_int_equal(out[i].v, f_of((int64_t)i));
    pool_end(p);
}

/* ------------------------------------------------------------- waiting */

/* crew_future_wait's three modes and as_completed on pool futures, with
 * one held on a gate. */
static void test_wait_modes(void **state) {
    gates *g = gates_new();
    crew_pool *p = pool_with(KIND, 2, 0);
    crew_future *fs[3];
    fs[0] = submit_gated(p, g, 1, 0, 0);
    assert_true(TEST_WAIT_UNTIL(crew_future_running(fs[0]), SETTLE));
    fs[1] = submit_val(p, 2);
    fs[2] = submit_val(p, -4700);

    int n = crew_future_wait(fs, 3, CREW_FIRST_COMPLETED, LONG_WAIT);
    if (n < 1 || n > 2) fail_msg("FIRST_COMPLETED gave %d (%s)", n, crew_err_name(n));
    ASSERT_RC(crew_future_wait(fs + 1, 2, CREW_ALL_COMPLETED, LONG_WAIT), 2);
    double t0 = test_now();
    ASSERT_RC(crew_future_wait(fs, 3, CREW_ALL_COMPLETED, SHORT), CREW_ETIMEDOUT);
    ASSERT_ELAPSED(test_now() - t0, SHORT);
    ASSERT_RC(crew_future_wait(fs, 3, CREW_FIRST_EXCEPTION, LONG_WAIT), 2);
    crew_future *two[2] = {fs[0], fs[1]};
    t0 = test_now();
    ASSERT_RC(crew_future_wait(two, 2, CREW_FIRST_EXCEPTION, SHORT), CREW_ETIMEDOUT);
    ASSERT_ELAPSED(test_now() - t0, SHORT);
    ASSERT_RC(crew_future_wait(two, 2, CREW_FIRST_COMPLETED, LONG_WAIT), 1);
    assert_false(crew_future_done(fs[0]));

    crew_future_iter *it = NULL;
    ASSERT_RC(crew_future_iter_start(&it, fs, 3), 0);
    size_t a = SIZE_MAX, b = SIZE_MAX, c = SIZE_MAX;
    ASSERT_RC(crew_future_iter_next(it, &a, LONG_WAIT), 0);
    ASSERT_RC(crew_future_iter_next(it, &b, LONG_WAIT), 0);
    if (!((a == 1 && b == 2) || (a == 2 && b == 1))) fail_msg("as_completed gave %zu, %zu", a, b);
    ASSERT_RC(crew_future_iter_next(it, &c, SHORT), CREW_ETIMEDOUT);
    gate_open(g, 0);
    ASSERT_RC(crew_future_iter_next(it, &c, LONG_WAIT), 0);
    assert_int_equal(c, 0);
    ASSERT_RC(crew_future_iter_next(it, &c, LONG_WAIT), CREW_EOF);
    crew_future_iter_free(it);

    ASSERT_RC(crew_future_wait(fs, 3, CREW_ALL_COMPLETED, LONG_WAIT), 3);
    get_val(fs[0], gate_result(1, 0));
    get_val(fs[1], f_of(2));
    ASSERT_RC(crew_future_get(fs[2], NULL, 0), -4700);
    crew_future_free(fs[2]);
    pool_end(p);
    gates_free(g);
}

/* The same without gates: many quick futures. */
static void test_wait_and_iter_quick(void **state) {
    crew_pool *p = pool_with(KIND, 3, 0);
    enum { N = 200 };
    crew_future *fs[N];
    for (int64_t i = 0; i < N; i++) fs[i] = submit_val(p, i % 17 == 5 ? -4800 : i);
    ASSERT_RC(crew_future_wait(fs, N, CREW_ALL_COMPLETED, LONG_WAIT), N);
    int n = crew_future_wait(fs, N, CREW_FIRST_EXCEPTION, LONG_WAIT);
    assert_int_equal(n, N);
    crew_future_iter *it = NULL;
    ASSERT_RC(crew_future_iter_start(&it, fs, N), 0);
    unsigned char seen[N] = {0};
    for (size_t k = 0; k < N; k++) {
        size_t idx = SIZE_MAX;
        ASSERT_RC(crew_future_iter_next(it, &idx, LONG_WAIT), 0);
        assert_true(idx < N);
        assert_int_equal(seen[idx]++, 0);
    }
    size_t idx;
    ASSERT_RC(crew_future_iter_next(it, &idx, LONG_WAIT), CREW_EOF);
    crew_future_iter_free(it);
    for (int64_t i = 0; i < N; i++) {
        if (i % 17 == 5) {
            ASSERT_RC(crew_future_get(fs[i], NULL, 0), -4800);
            crew_future_free(fs[i]);
        } else {
            get_val(fs[i], f_of(i));
        }
    }
    pool_end(p);
}

/* get times out while the task is held, and while a task waits behind it. */
static void test_future_get_timeout(void **state) {
    gates *g = gates_new();
    crew_pool *p = pool_with(KIND, 1, 0);
    crew_future *f = submit_gated(p, g, 3, 0, 0);
    assert_true(TEST_WAIT_UNTIL(crew_future_running(f), SETTLE));
    crew_future *behind = submit_val(p, 4);
    int64_t v = -1;
    double t0 = test_now();
    ASSERT_RC(crew_future_get(f, &v, SHORT), CREW_ETIMEDOUT);
    ASSERT_ELAPSED(test_now() - t0, SHORT);
    ASSERT_RC(crew_future_get(f, &v, 0), CREW_ETIMEDOUT);
    t0 = test_now();
    ASSERT_RC(crew_future_get(behind, &v, SHORT), CREW_ETIMEDOUT);
    ASSERT_ELAPSED(test_now() - t0, SHORT);
    assert_int_equal(v, -1);
    gate_open(g, 0);
    get_val(f, gate_result(3, 0));
    get_val(behind, f_of(4));
    pool_end(p);
    gates_free(g);
}

/* ------------------------------------------------------------- nesting */

#define NEST_M 8  /* items of the map inside the top task */
#define NEST_R 48 /* iterations of each item's for/reduce: one leaf task each */

static int64_t nest_item_sum(size_t i) {
    int64_t s = 0;
    for (size_t x = i * NEST_R; x < (i + 1) * NEST_R; x++) s += f_of((int64_t)x);
    return s;
}

/* Submit t_val for x in [b, e) on the current pool and add up the results. */
static int leaf_sum(size_t b, size_t e, int64_t *sum) {
    crew_pool *p = crew_pool_current();
    if (p == NULL) return CREW_EPROTO;
    crew_future **fs = calloc(e - b, sizeof *fs);
    if (fs == NULL) return CREW_ENOMEM;
    int rc = 0;
    size_t made = 0;
    for (size_t x = b; x < e && rc == 0; x++) {
        int64_t v = (int64_t)x;
        crew_task t = {.fn = t_val, .in = &v, .in_size = sizeof v, .out_size = sizeof v};
        rc = crew_pool_submit(p, &t, &fs[made]);
        if (rc == 0) made++;
    }
    for (size_t k = 0; k < made; k++) {
        int64_t y = 0;
        int r = crew_future_get(fs[k], &y, LONG_WAIT);
        if (r != 0 && rc == 0) rc = r;
        *sum += y;
        crew_future_free(fs[k]);
    }
    free(fs);
    return rc;
}

typedef struct nest_area {
    _Atomic int64_t acc[NEST_M];
} nest_area;

/* for body: leaf tasks, summed into the item's accumulator (shared). */
static int b_nest(size_t b, size_t e, void *ctx) {
    nest_area *a = ctx;
    int64_t s = 0;
    int rc = leaf_sum(b, e, &s);
    if (rc == 0) atomic_fetch_add(&a->acc[b / NEST_R], s);
    return rc;
}

/* map item i: a for over its iterations on the same pool; out: its sum. */
static int t_nest_mid_for(const void *in, void *out, void *ctx) {
    int64_t i;
    memcpy(&i, in, sizeof i);
    if (crew_pool_task_index() != (size_t)i) return CREW_EPROTO;
    crew_pool *p = crew_pool_current();
    if (p == NULL) return CREW_EPROTO;
    crew_for l = {.begin = (size_t)i * NEST_R, .end = (size_t)(i + 1) * NEST_R, .body = b_nest,
                  .ctx = ctx, .grain = 1};
    int rc = crew_pool_for(p, &l);
    if (rc != 0) return rc;
    nest_area *a = ctx;
    int64_t s = atomic_load(&a->acc[i]);
    memcpy(out, &s, sizeof s);
    return 0;
}

/* reduce body: leaf tasks added into acc. */
static int r_nest(size_t b, size_t e, void *acc, void *ctx) {
    (void)ctx;
    int64_t s;
    memcpy(&s, acc, sizeof s);
    int rc = leaf_sum(b, e, &s);
    memcpy(acc, &s, sizeof s);
    return rc;
}

/* map item i: a reduce over its iterations on the same pool. */
static int t_nest_mid_reduce(const void *in, void *out, void *ctx) {
    (void)ctx;
    int64_t i;
    memcpy(&i, in, sizeof i);
    if (crew_pool_task_index() != (size_t)i) return CREW_EPROTO;
    crew_pool *p = crew_pool_current();
    if (p == NULL) return CREW_EPROTO;
    int64_t s = -1;
    crew_reduce r = {.begin = (size_t)i * NEST_R, .end = (size_t)(i + 1) * NEST_R, .body = r_nest,
                     .combine = c_add_i64, .identity = &zero64, .size = sizeof s, .result = &s,
                     .grain = 1};
    int rc = crew_pool_reduce(p, &r);
    if (rc != 0) return rc;
    memcpy(out, &s, sizeof s);
    return 0;
}

/* The top task: in: int64 0 (map of fors), 1 (map of reduces) or 2 (imap of
 * reduces) over NEST_M items on its own pool. out: rec {total, (uintptr_t)crew_pool_current()}. */
static int t_nest_top(const void *in, void *out, void *ctx) {
    int64_t which;
    memcpy(&which, in, sizeof which);
    crew_pool *p = crew_pool_current();
    if (p == NULL) return CREW_EPROTO;
    int64_t items[NEST_M], outs[NEST_M];
    for (int64_t i = 0; i < NEST_M; i++) items[i] = i;
    int rc;
    if (which == 2) { /* imap: the items through crew_imap_next */
        crew_imap im = {.fn = t_nest_mid_reduce, .in = items, .count = NEST_M,
                        .in_size = sizeof *items, .out_size = sizeof *outs, .unordered = true,
                        .chunk_size = 1};
        crew_imap_iter *it = NULL;
        rc = crew_pool_imap(p, &im, &it);
        if (rc != 0) return rc;
        for (size_t k = 0; k < NEST_M && rc == 0; k++) {
            int64_t v = 0;
            size_t idx = SIZE_MAX;
            rc = crew_imap_next(it, &v, &idx, LONG_WAIT);
            if (rc == 0 && idx >= NEST_M) rc = CREW_EPROTO;
            if (rc == 0) outs[idx] = v;
        }
        if (rc == 0 && crew_imap_next(it, NULL, NULL, LONG_WAIT) != CREW_EOF) rc = CREW_EPROTO;
        crew_imap_free(it);
    } else {
        crew_map m = {.fn = which == 0 ? t_nest_mid_for : t_nest_mid_reduce, .in = items,
                      .in_size = sizeof *items, .out = outs, .out_size = sizeof *outs,
                      .count = NEST_M, .ctx = ctx, .chunk_size = 1};
        rc = crew_pool_map(p, &m);
    }
    if (rc != 0) return rc;
    rec r = {0, (uint64_t)(uintptr_t)p};
    for (size_t i = 0; i < NEST_M; i++) {
        if (outs[i] != nest_item_sum(i)) return CREW_EPROTO;
        r.v += outs[i];
    }
    memcpy(out, &r, sizeof r);
    return 0;
}

static void nest_run(void **state, int64_t which, nest_area *a) {
    int64_t want = 0;
    for (size_t i = 0; i < NEST_M; i++) want += nest_item_sum(i);
    const size_t ws[] = {1, 2};
    for (size_t k = 0; k < 2; k++) {
        if (a != NULL)
            for (size_t i = 0; i < NEST_M; i++) atomic_store(&a->acc[i], 0);
        crew_pool *p = pool_with(KIND, ws[k], 0);
        crew_future *f = submit_task(p, t_nest_top, &which, sizeof which, sizeof(rec), a);
        rec r = {0, 0};
        ASSERT_RC(crew_future_get(f, &r, LONG_WAIT), 0);
        assert_int_equal(r.v, want);
        assert_int_equal(r.index, (uint64_t)(uintptr_t)p);
        crew_future_free(f);
        assert_null(crew_pool_current());
        pool_end(p);
    }
}

/* task -> map on the same pool -> for in each item -> submit + get in each
 * sub-range, on 1 and 2 workers. */
static void test_nested_for(void **state) {
    nest_area *a = shm_map(sizeof *a);
    nest_run(state, 0, a);
    shm_unmap(a, sizeof *a);
}

/* The same with reduce in place of for (results only through outputs). */
static void test_nested_reduce(void **state) { nest_run(state, 1, NULL); }

/* task -> imap_unordered + crew_imap_next -> reduce -> submit + get. */
static void test_nested_imap(void **state) { nest_run(state, 2, NULL); }

/* ----------------------------------------------------------- lifetime */

/* terminate: pending tasks are cancelled (no callbacks), the running one
 * finishes (threads) or is killed with its worker process and fails with
 * CREW_ECANCELED (processes), a map, an imap and a map_async in progress end
 * with CREW_ECANCELED, join waits. */
static void test_terminate_pending(void **state) {
    const bool procs = KIND == CREW_PROCESSES;
    gates *g = gates_new();
    crew_pool *p = pool_with(KIND, 1, 0);
    crew_future *a = submit_gated(p, g, 1, 0, 0);
    assert_true(TEST_WAIT_UNTIL(crew_future_running(a), SETTLE));
    cbrec c = {0};
    enum { P = 5 };
    crew_future *pend[P];
    for (int k = 0; k < P; k++) {
        int64_t v = k;
        crew_task t = {.fn = t_val, .in = &v, .in_size = sizeof v, .out_size = sizeof v,
                       .callback = cb_ok, .error_callback = cb_err, .callback_arg = &c};
        ASSERT_RC(crew_pool_submit(p, &t, &pend[k]), 0);
    }
    /* A map from another thread, its items also held by the gate. */
    enum { M = 100 };
    gitem items[M];
    int64_t outs[M];
    for (int k = 0; k < M; k++) items[k] = (gitem){k, 0, 0};
    crew_map m = {.fn = t_gate, .in = items, .in_size = sizeof *items, .out = outs,
                  .out_size = sizeof *outs, .count = M, .ctx = g, .chunk_size = 1};
    helper h = {.pool = p, .map = &m};
    helper_start(&h, op_map);
    assert_blocked(&h);

    /* An imap and a map_async, all their items waiting behind a. */
    int64_t vals[10] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, vouts[10];
    crew_imap im = {.fn = t_val, .in = vals, .count = 10, .in_size = sizeof *vals,
                    .out_size = sizeof *vals, .chunk_size = 1};
    crew_imap_iter *it = imap_start(p, &im);
    crew_map ma = {.fn = t_val, .in = vals, .in_size = sizeof *vals, .out = vouts,
                   .out_size = sizeof *vouts, .count = 10, .chunk_size = 1};
    crew_future *fa = NULL;
    ASSERT_RC(crew_pool_map_async(p, &ma, &fa), 0);

    ASSERT_RC(crew_pool_terminate(p), 0); /* never blocks */
    ASSERT_RC(crew_imap_next(it, NULL, NULL, LONG_WAIT), CREW_ECANCELED);
    crew_imap_free(it);
    ASSERT_RC(crew_future_get(fa, NULL, LONG_WAIT), CREW_ECANCELED);
    crew_future_free(fa);
    for (int k = 0; k < P; k++) {
        ASSERT_RC(crew_future_get(pend[k], NULL, LONG_WAIT), CREW_ECANCELED);
        assert_true(crew_future_cancelled(pend[k]));
        crew_future_free(pend[k]);
    }
    if (!procs) assert_true(crew_future_running(a));
    crew_future *f = NULL;
    int64_t v = 1;
    crew_task t = {.fn = t_val, .in = &v, .in_size = sizeof v, .out_size = sizeof v};
    ASSERT_RC(crew_pool_submit(p, &t, &f), CREW_ESHUTDOWN);
    if (!procs) { /* the running task holds the join */
        double t0 = test_now();
        ASSERT_RC(crew_pool_join(p, SHORT), CREW_ETIMEDOUT);
        ASSERT_ELAPSED(test_now() - t0, SHORT);
    }

    gate_open(g, 0);
    th_join(h.th);
    ASSERT_RC(h.rc, CREW_ECANCELED);
    ASSERT_RC(crew_pool_join(p, LONG_WAIT), 0);
    if (procs) {
        ASSERT_RC(crew_future_get(a, NULL, LONG_WAIT), CREW_ECANCELED);
        crew_future_free(a);
    } else {
        get_val(a, gate_result(1, 0));
    }
    assert_int_equal(atomic_load(&c.ok), 0);
    assert_int_equal(atomic_load(&c.err), 0);
    crew_pool_free(p);
    assert_true(atomic_load(&g->finished) < M + 1); /* most of the map never ran */
    if (procs) /* a killed worker died waiting on a gate: its events count it still */
        shm_unmap(g, sizeof *g);
    else
        gates_free(g);
}

/* terminate on an idle pool, then join; terminate then free. */
static void test_terminate_idle(void **state) {
    crew_pool *p = pool_with(KIND, 2, 0);
    map_check(p, 100, 0);
    ASSERT_RC(crew_pool_terminate(p), 0);
    ASSERT_RC(crew_pool_join(p, LONG_WAIT), 0);
    crew_pool_free(p);
    p = pool_with(KIND, 2, 0);
    ASSERT_RC(crew_pool_terminate(p), 0);
    crew_pool_free(p);
}

/* close: everything from outside gets CREW_ESHUTDOWN; accepted work runs
 * to the end. */
static void test_close_refuses_new_work(void **state) {
    crew_pool *p = pool_with(KIND, 2, 0);
    enum { N = 50 };
    crew_future *fs[N];
    for (int64_t i = 0; i < N; i++) fs[i] = submit_val(p, i);
    ASSERT_RC(crew_pool_close(p), 0);

    int64_t in[10] = {0}, out[10];
    crew_future *f = NULL;
    crew_task t = {.fn = t_val, .in = in, .in_size = 8, .out_size = 8};
    ASSERT_RC(crew_pool_submit(p, &t, &f), CREW_ESHUTDOWN);
    crew_map m = {.fn = t_val, .in = in, .in_size = 8, .out = out, .out_size = 8, .count = 10};
    ASSERT_RC(crew_pool_map(p, &m), CREW_ESHUTDOWN);
    ASSERT_RC(crew_pool_map_async(p, &m, &f), CREW_ESHUTDOWN);
    crew_imap_iter *it = NULL;
    crew_imap im = {.fn = t_val, .in = in, .count = 10, .in_size = 8, .out_size = 8};
    ASSERT_RC(crew_pool_imap(p, &im, &it), CREW_ESHUTDOWN);
    crew_for l = {.begin = 0, .end = 10, .body = b_nop};
    ASSERT_RC(crew_pool_for(p, &l), CREW_ESHUTDOWN);
    int64_t res = 0;
    crew_reduce r = {.begin = 0, .end = 10, .body = r_nop, .combine = c_add_i64,
                     .identity = &zero64, .size = sizeof res, .result = &res};
    ASSERT_RC(crew_pool_reduce(p, &r), CREW_ESHUTDOWN);
    assert_null(f);
    assert_null(it);

    ASSERT_RC(crew_pool_join(p, LONG_WAIT), 0);
    for (int64_t i = 0; i < N; i++) {
        assert_true(crew_future_done(fs[i]));
        get_val(fs[i], f_of(i));
    }
    crew_pool_free(p);
}

/* A task accepted before close may still submit after it. */
static void test_close_runs_nested(void **state) {
    gates *g = gates_new();
    crew_pool *p = pool_with(KIND, 1, 0);
    crew_future *a = submit_gated(p, g, 2, 0, 5);
    assert_true(TEST_WAIT_UNTIL(crew_future_running(a), SETTLE));
    crew_future *b = submit_val(p, 6); /* pending at close: still runs */
    ASSERT_RC(crew_pool_close(p), 0);
    gate_open(g, 0);
    ASSERT_RC(crew_pool_join(p, LONG_WAIT), 0);
    assert_true(crew_future_done(a));
    get_val(a, gate_result(2, 5));
    get_val(b, f_of(6));
    crew_pool_free(p);
    gates_free(g);
}

static void test_join_without_close(void **state) {
    crew_pool *p = pool_with(KIND, 2, 0);
    ASSERT_RC(crew_pool_join(p, SHORT), CREW_EINVAL);
    ASSERT_RC(crew_pool_join(p, 0), CREW_EINVAL);
    map_check(p, 100, 0); /* still open */
    ASSERT_RC(crew_pool_close(p), 0);
    ASSERT_RC(crew_pool_join(p, LONG_WAIT), 0);
    crew_pool_free(p);
}

/* in: gitem; waits for its gate, then joins its own pool. out: int64 rc. */
static int t_join_self(const void *in, void *out, void *ctx) {
    gates *g = ctx;
    gitem it;
    memcpy(&it, in, sizeof it);
    if (crew_event_wait(&g->ev[it.gate], LONG_WAIT) != 0) return CREW_ETIMEDOUT;
    int64_t rc = crew_pool_join(crew_pool_current(), 1.0);
    memcpy(out, &rc, sizeof rc);
    return 0;
}

static void test_join_from_task(void **state) {
    gates *g = gates_new();
    crew_pool *p = pool_with(KIND, 2, 0);
    gitem it = {0, 0, 0};
    crew_future *f = submit_task(p, t_join_self, &it, sizeof it, sizeof(int64_t), g);
    ASSERT_RC(crew_pool_close(p), 0);
    gate_open(g, 0);
    get_val(f, CREW_EDEADLK);
    ASSERT_RC(crew_pool_join(p, LONG_WAIT), 0);
    crew_pool_free(p);
    gates_free(g);
}

/* free on an open pool closes and joins it: every accepted task has run. */
static void test_free_open_pool(void **state) {
    crew_pool *p = pool_with(KIND, 2, 0);
    enum { N = 200 };
    crew_future *fs[N];
    for (int64_t i = 0; i < N; i++) fs[i] = submit_val(p, i);
    crew_pool_free(p);
    for (int64_t i = 0; i < N; i++) {
        assert_true(crew_future_done(fs[i]));
        int64_t v = -1;
        ASSERT_RC(crew_future_get(fs[i], &v, 0), 0);
        assert_int_equal(v, f_of(i));
        crew_future_free(fs[i]);
    }
}

/* -------------------------------------------------- indices and streams */

static void test_task_index_and_current(void **state) {
    assert_null(crew_pool_current());
    assert_int_equal(crew_pool_task_index(), SIZE_MAX);
    crew_pool *p = pool_with(KIND, 2, 0);
    for (size_t k = 0; k < 5; k++) {
        crew_future *f = submit_task(p, t_current, NULL, 0, sizeof(rec), NULL);
        rec r = {0, 0};
        ASSERT_RC(crew_future_get(f, &r, LONG_WAIT), 0);
        assert_int_equal(r.v, (int64_t)(intptr_t)p);
        assert_int_equal(r.index, k);
        crew_future_free(f);
    }
    enum { N = 777 };
    rec out[N];
    crew_map m = {.fn = t_current, .in = NULL, .in_size = 0, .out = out, .out_size = sizeof *out,
                  .count = N, .chunk_size = 5};
    ASSERT_RC(crew_pool_map(p, &m), 0);
    for (size_t i = 0; i < N; i++) {
        assert_int_equal(out[i].v, (int64_t)(intptr_t)p);
        assert_int_equal(out[i].index, i);
    }
    assert_null(crew_pool_current());
    assert_int_equal(crew_pool_task_index(), SIZE_MAX);
    pool_end(p);
    assert_null(crew_pool_current());
}

#define MC_SEED 20240611u
#define MC_DRAWS 64

static int64_t mc_hits(uint64_t stream) {
    crew_rng r;
    crew_rng_init(&r, MC_SEED, stream);
    int64_t hits = 0;
    for (int k = 0; k < MC_DRAWS; k++) {
        double x = crew_rng_uniform(&r), y = crew_rng_uniform(&r);
        hits += x * x + y * y < 1.0;
    }
    return hits;
}

/* in: int64 i (must be the task index). out: int64 hits of stream i. */
static int t_mc(const void *in, void *out, void *ctx) {
    (void)ctx;
    int64_t i;
    memcpy(&i, in, sizeof i);
    size_t idx = crew_pool_task_index();
    if ((size_t)i != idx) return CREW_EPROTO;
    int64_t h = mc_hits(idx);
    memcpy(out, &h, sizeof h);
    return 0;
}

/* Monte Carlo with crew_rng_init(seed, crew_pool_task_index()): the same
 * numbers whatever the worker count, chunk size or streaming order. */
static void test_rng_monte_carlo(void **state) {
    enum { N = 3000 };
    static int64_t in[N], want[N], out[N];
    int64_t total = 0;
    for (size_t i = 0; i < N; i++) {
        in[i] = (int64_t)i;
        want[i] = mc_hits(i);
        total += want[i];
    }
    double pi = 4.0 * (double)total / (double)(N * MC_DRAWS);
    assert_true(pi > 3.09 && pi < 3.19);
    const size_t ws[] = {1, 2, 3, 8};
    const size_t chunks[] = {0, 1, 7, 64};
    for (size_t wk = 0; wk < 4; wk++) {
        crew_pool *p = pool_with(KIND, ws[wk], 0);
        for (size_t ck = 0; ck < 4; ck++) {
            memset(out, 0xff, sizeof out);
            crew_map m = {.fn = t_mc, .in = in, .in_size = sizeof *in, .out = out,
                          .out_size = sizeof *out, .count = N, .chunk_size = chunks[ck]};
            ASSERT_RC(crew_pool_map(p, &m), 0);
            assert_memory_equal(out, want, sizeof out);
        }
        crew_imap im = {.fn = t_mc, .in = in, .count = N, .in_size = sizeof *in,
                        .out_size = sizeof(int64_t), .unordered = true, .chunk_size = 5};
        crew_imap_iter *it = imap_start(p, &im);
        for (size_t k = 0; k < N; k++) {
            int64_t h = -1;
            size_t idx = SIZE_MAX;
            ASSERT_RC(crew_imap_next(it, &h, &idx, LONG_WAIT), 0);
            assert_true(idx < N);
            assert_int_equal(h, want[idx]);
        }
        ASSERT_RC(crew_imap_next(it, NULL, NULL, LONG_WAIT), CREW_EOF);
        crew_imap_free(it);
        pool_end(p);
    }
}

/* ------------------------------------------------------------------ fork */

static int child_pool_calls(void *arg) {
    crew_pool *p = arg;
    int64_t in[4] = {1, 2, 3, 4}, out[4];
    crew_future *f = NULL;
    crew_task t = {.fn = t_val, .in = in, .in_size = 8, .out_size = 8};
    CHILD_RC(crew_pool_submit(p, &t, &f), CREW_ECHILD);
    crew_map m = {.fn = t_val, .in = in, .in_size = 8, .out = out, .out_size = 8, .count = 4};
    CHILD_RC(crew_pool_map(p, &m), CREW_ECHILD);
    CHILD_RC(crew_pool_map_async(p, &m, &f), CREW_ECHILD);
    crew_imap_iter *it = NULL;
    crew_imap im = {.fn = t_val, .in = in, .count = 4, .in_size = 8, .out_size = 8};
    CHILD_RC(crew_pool_imap(p, &im, &it), CREW_ECHILD);
    crew_for l = {.begin = 0, .end = 10, .body = b_nop};
    CHILD_RC(crew_pool_for(p, &l), CREW_ECHILD);
    CHILD_RC(crew_pool_close(p), CREW_ECHILD);
    CHILD_RC(crew_pool_terminate(p), CREW_ECHILD);
    CHILD_RC(crew_pool_join(p, 1.0), CREW_ECHILD);
    crew_pool_free(p); /* only releases memory */
    return 0;
}

/* A forked child cannot use its parent's pool; the parent's pool goes on. */
static void test_fork_child(void **state) {
    crew_pool *p = pool_with(KIND, 2, 0);
    map_check(p, 100, 0);
    reap_ok(fork_child(child_pool_calls, p));
    map_check(p, 100, 0);
    pool_end(p);
}

/* ----------------------------------------------------- threads only */

/* The pool's threads, by name prefix: how many, and up to `max` tids. */
static size_t pool_threads(const char *prefix, int *tids, size_t max) {
    DIR *d = opendir("/proc/self/task");
    assert_non_null(d);
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        char path[320], comm[64];
        snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
        if (!read_small(path, comm, sizeof comm)) continue;
        if (strncmp(comm, prefix, strlen(prefix)) != 0) continue;
        if (n < max) tids[n] = atoi(e->d_name);
        n++;
    }
    closedir(d);
    return n;
}

static bool all_asleep(const int *tids, size_t n) {
    for (size_t k = 0; k < n; k++)
        if (!task_in_futex(getpid(), tids[k])) return false;
    return true;
}

/* THREADS_ONLY: workers are named by the `name` prefix ("crew-pool" by
 * default), and an idle pool's workers sleep. */
static void test_thread_names_and_idle(void **state) {
    int tids[8];
    crew_pool_options o = {.workers = 3, .name = "tp-test"};
    crew_pool *p = pool_opts(KIND, &o);
    assert_int_equal(pool_threads("tp-test", tids, 8), 3);
    assert_true(TEST_WAIT_UNTIL(all_asleep(tids, 3), SETTLE));
    map_check(p, 5000, 1);
    assert_true(TEST_WAIT_UNTIL(all_asleep(tids, 3), SETTLE));
    pool_end(p);
    assert_true(TEST_WAIT_UNTIL(pool_threads("tp-test", tids, 8) == 0, SETTLE));

    p = pool_with(KIND, 2, 0);
    assert_int_equal(pool_threads("crew-pool", tids, 8), 2);
    pool_end(p);
}

/* ----------------------------------------------------------------- group */

/* A group's task gets one `void *` and no ctx, so what the SHARED_MAP group
 * tests' tasks use is reached through globals set before the pool is
 * created (a process pool's children inherit them): a `gates` (gates,
 * started/finished, marks), one run count per task index, and two tree
 * counters, all MAP_SHARED. */
#define GROUP_N 10000
static gates *grp;
static _Atomic int *grp_flags; /* GROUP_N run counts */
static _Atomic long *grp_tree; /* [0] tree nodes run, [1] leaves run */

static void grp_setup(void) {
    grp = gates_new();
    grp_flags = shm_map(GROUP_N * sizeof *grp_flags);
    for (size_t i = 0; i < GROUP_N; i++) atomic_init(&grp_flags[i], 0);
    grp_tree = shm_map(2 * sizeof *grp_tree);
    atomic_init(&grp_tree[0], 0);
    atomic_init(&grp_tree[1], 0);
}

/* killed: a worker process died waiting on a gate, whose event counts it
 * still; then the mapping is only unmapped. */
static void grp_teardown(bool killed) {
    if (killed) shm_unmap(grp, sizeof *grp);
    else gates_free(grp);
    shm_unmap(grp_flags, GROUP_N * sizeof *grp_flags);
    shm_unmap(grp_tree, 2 * sizeof *grp_tree);
    grp = NULL;
    grp_flags = NULL;
    grp_tree = NULL;
}

static crew_group *group_new(crew_pool *p) {
    crew_group *g = NULL;
    ASSERT_RC(crew_group_create(&g, p), 0);
    assert_non_null(g);
    assert_false(crew_group_cancelled(g));
    return g;
}

/* arg: an index below GROUP_N; counts its run there. */
static int g_flag(void *arg) {
    intptr_t i = (intptr_t)arg;
    if (i < 0 || i >= GROUP_N) return CREW_EPROTO;
    atomic_fetch_add(&grp_flags[i], 1);
    return 0;
}

/* Every grp_flags[i] for i < n is want(i); fails the test otherwise. */
static void flags_check(size_t n, int (*want)(size_t i), const char *what) {
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < n; i++)
        if (atomic_load(&grp_flags[i]) != want(i) && bad++ == 0) first = i;
    if (bad != 0)
        fail_msg("%s: %zu tasks ran the wrong number of times; the first, [%zu], ran %d times, "
                 "not %d",
                 what, bad, first, atomic_load(&grp_flags[first]), want(first));
}

static int want_once(size_t i) {
    (void)i;
    return 1;
}

static int want_even_twice(size_t i) { return i % 2 == 0 ? 2 : 1; }

/* arg: the code to return, a number cast to a pointer. */
static int g_ret(void *arg) { return (int)(intptr_t)arg; }

/* Process pools only: the worker process exits with status 3. */
static int g_exit(void *arg) {
    (void)arg;
    _exit(3);
}

/* Counts its run in grp->marks. */
static int g_mark(void *arg) {
    (void)arg;
    atomic_fetch_add(&grp->marks, 1);
    return 0;
}

/* arg: a hold; counts its start, waits for its gate, counts its end and
 * returns its code. (Static data: the same address in a child.) */
typedef struct hold {
    int gate;
    int rc;
} hold;

static hold holds[] = {{0, 0}, {1, 0}, {0, -5}, {1, -7}};

static int g_hold(void *arg) {
    const hold *h = arg;
    atomic_fetch_add(&grp->started, 1);
    if (crew_event_wait(&grp->ev[h->gate], LONG_WAIT) != 0) return CREW_ETIMEDOUT;
    atomic_fetch_add(&grp->finished, 1);
    return h->rc;
}

/* Add a task held on gate k (holds[k]) and wait until it runs. */
static void run_held(crew_group *g, int k) {
    long before = atomic_load(&grp->started);
    ASSERT_RC(crew_group_run(g, g_hold, &holds[k]), 0);
    assert_true(TEST_WAIT_UNTIL(atomic_load(&grp->started) > before, SETTLE));
}

/* arg: the pool it must run on. Returns 0 when crew_pool_current() is that
 * pool and crew_pool_task_index() is SIZE_MAX (a group's task has no item
 * index); else -1001 (wrong index), -1002 (wrong pool) or -1003 (both). */
static int g_context(void *arg) {
    int rc = 0;
    if (crew_pool_task_index() != SIZE_MAX) rc -= 1;
    if (crew_pool_current() != arg) rc -= 2;
    return rc == 0 ? 0 : -1000 + rc;
}

/* A binary tree grown in a group: each node counts itself (and a leaf its
 * leaf) and adds its two children to the group. One level record per depth,
 * shared by the nodes at that depth; it must outlive the group's wait. */
#define TREE_MAX 16

typedef struct tree_level {
    crew_group *g;
    int depth;
    int leaf_rc;               /* what a leaf returns */
    _Atomic long *nodes, *leaves;
    struct tree_level *below;  /* depth - 1 */
} tree_level;

static void tree_init(tree_level *lv, crew_group *g, int depth, _Atomic long *nodes,
                      _Atomic long *leaves) {
    for (int d = 0; d <= depth; d++)
        lv[d] = (tree_level){g, d, 0, nodes, leaves, d > 0 ? &lv[d - 1] : NULL};
}

static long tree_nodes(int depth) { return (2L << depth) - 1; }

/* arg: the node's tree_level. */
static int g_tree(void *arg) {
    tree_level *l = arg;
    atomic_fetch_add(l->nodes, 1);
    if (l->depth == 0) {
        atomic_fetch_add(l->leaves, 1);
        return l->leaf_rc;
    }
    for (int k = 0; k < 2; k++) {
        int rc = crew_group_run(l->g, g_tree, l->below);
        if (rc != 0) return rc;
    }
    return 0;
}

/* Grow a tree of `depth` in a group of its own on the calling task's pool
 * and wait for it. 0 or the first failure. */
static int own_tree(int depth, _Atomic long *nodes, _Atomic long *leaves) {
    crew_pool *p = crew_pool_current();
    if (p == NULL || depth < 0 || depth >= TREE_MAX) return CREW_EPROTO;
    crew_group *g = NULL;
    int rc = crew_group_create(&g, p);
    if (rc != 0) return rc;
    tree_level lv[TREE_MAX];
    tree_init(lv, g, depth, nodes, leaves);
    rc = crew_group_run(g, g_tree, &lv[depth]);
    int w = crew_group_wait(g, LONG_WAIT);
    crew_group_free(g);
    return rc != 0 ? rc : w;
}

/* arg: a depth. A group's task that grows a tree in an inner group and waits
 * for it, counting in grp_tree. */
static int g_inner(void *arg) { return own_tree((int)(intptr_t)arg, &grp_tree[0], &grp_tree[1]); }

/* A submitted task: in int64 depth; out int64[2] {nodes, leaves} of the
 * tree it grew in a group of its own (counters on its stack). */
static int t_group_tree(const void *in, void *out, void *ctx) {
    (void)ctx;
    int64_t depth;
    memcpy(&depth, in, sizeof depth);
    _Atomic long nodes = 0, leaves = 0;
    int rc = own_tree((int)depth, &nodes, &leaves);
    if (rc != 0) return rc;
    int64_t r[2] = {atomic_load(&nodes), atomic_load(&leaves)};
    memcpy(out, r, sizeof r);
    return 0;
}

/* Every task runs exactly once with 1, 2 and 8 workers (a thread pool's
 * caller runs some of them itself, throttled); the emptied group takes a
 * second batch. */
static void test_group_runs_all(void **state) {
    grp_setup();
    const size_t ws[] = {1, 2, 8};
    for (size_t k = 0; k < 3; k++) {
        for (size_t i = 0; i < GROUP_N; i++) atomic_store(&grp_flags[i], 0);
        crew_pool *p = pool_with(KIND, ws[k], 0);
        crew_group *g = group_new(p);
        for (intptr_t i = 0; i < GROUP_N; i++) ASSERT_RC(crew_group_run(g, g_flag, (void *)i), 0);
        ASSERT_RC(crew_group_wait(g, LONG_WAIT), 0);
        flags_check(GROUP_N, want_once, "first batch");
        ASSERT_RC(crew_group_wait(g, 0), 0); /* empty: at once */
        for (intptr_t i = 0; i < GROUP_N; i += 2)
            ASSERT_RC(crew_group_run(g, g_flag, (void *)i), 0);
        ASSERT_RC(crew_group_wait(g, LONG_WAIT), 0);
        flags_check(GROUP_N, want_even_twice, "second batch");
        assert_false(crew_group_cancelled(g));
        crew_group_free(g);
        pool_end(p);
    }
    grp_teardown(false);
}

/* In a group's task crew_pool_current() is the pool and
 * crew_pool_task_index() is SIZE_MAX, whatever the kind. */
static void test_group_task_context(void **state) {
    crew_pool *p = pool_with(KIND, 2, 0);
    crew_group *g = group_new(p);
    int rc = 0;
    for (int i = 0; i < 100 && rc == 0; i++) rc = crew_group_run(g, g_context, p);
    if (rc != CREW_ECANCELED) ASSERT_RC(rc, 0); /* cancelled: a task failed, wait says how */
    rc = crew_group_wait(g, LONG_WAIT);
    if (rc != 0)
        fail_msg("wait returned %d (%s): a task saw %s", rc, crew_err_name(rc),
                 rc == -1001   ? "crew_pool_task_index() != SIZE_MAX"
                 : rc == -1002 ? "crew_pool_current() != its pool"
                 : rc == -1003 ? "a wrong pool and index"
                               : "something else");
    assert_null(crew_pool_current());
    assert_int_equal(crew_pool_task_index(), SIZE_MAX);
    crew_group_free(g);
    pool_end(p);
}

/* A failure's code reaches wait and cancels the group (later runs get
 * CREW_ECANCELED); a positive return counts as CREW_EINVAL; after wait the
 * group is new again. Process pools: a child that dies in a task fails the
 * group with CREW_EWORKERDIED and the pool goes on. */
static void test_group_errors(void **state) {
    crew_pool *p = pool_with(KIND, 2, 0);
    crew_group *g = group_new(p);
    for (int i = 0; i < 100; i++) ASSERT_RC(crew_group_run(g, g_ret, (void *)0), 0);
    ASSERT_RC(crew_group_run(g, g_ret, (void *)(intptr_t)-5), 0);
    assert_true(TEST_WAIT_UNTIL(crew_group_cancelled(g), SETTLE));
    ASSERT_RC(crew_group_run(g, g_ret, (void *)0), CREW_ECANCELED);
    ASSERT_RC(crew_group_wait(g, LONG_WAIT), -5);
    assert_false(crew_group_cancelled(g));

    for (int i = 0; i < 100; i++) ASSERT_RC(crew_group_run(g, g_ret, (void *)0), 0);
    ASSERT_RC(crew_group_wait(g, LONG_WAIT), 0);
    ASSERT_RC(crew_group_run(g, g_ret, (void *)(intptr_t)7), 0);
    ASSERT_RC(crew_group_wait(g, LONG_WAIT), CREW_EINVAL);
    ASSERT_RC(crew_group_run(g, g_ret, (void *)(intptr_t)CREW_EPROTO), 0);
    ASSERT_RC(crew_group_wait(g, LONG_WAIT), CREW_EPROTO);
    ASSERT_RC(crew_group_wait(g, LONG_WAIT), 0); /* reported once */

    if (KIND == CREW_PROCESSES) {
        int last = 12345;
        assert_int_equal(crew_pool_worker_deaths(p, &last), 0);
        ASSERT_RC(crew_group_run(g, g_exit, NULL), 0);
        ASSERT_RC(crew_group_wait(g, LONG_WAIT), CREW_EWORKERDIED);
        assert_int_equal(crew_pool_worker_deaths(p, &last), 1);
        assert_int_equal(last, 3);
        for (int i = 0; i < 50; i++) ASSERT_RC(crew_group_run(g, g_ret, (void *)0), 0);
        ASSERT_RC(crew_group_wait(g, LONG_WAIT), 0);
    }
    crew_group_free(g);
    pool_end(p);
}

/* One worker: a held task that then fails is the first failure, and the
 * tasks queued behind it are skipped. Two workers: the first failure wins
 * over a later one. */
static void test_group_first_error(void **state) {
    grp_setup();
    crew_pool *p = pool_with(KIND, 1, 0);
    crew_group *g = group_new(p);
    run_held(g, 2); /* gate 0, then -5 */
    for (int i = 0; i < 20; i++) ASSERT_RC(crew_group_run(g, g_mark, NULL), 0);
    assert_false(crew_group_cancelled(g));
    gate_open(grp, 0);
    ASSERT_RC(crew_group_wait(g, LONG_WAIT), -5);
    assert_int_equal(atomic_load(&grp->finished), 1);
    assert_int_equal(atomic_load(&grp->marks), 0);
    crew_group_free(g);
    pool_end(p);

    p = pool_with(KIND, 2, 0);
    g = group_new(p);
    run_held(g, 3); /* gate 1, then -7 */
    ASSERT_RC(crew_group_run(g, g_ret, (void *)(intptr_t)-5), 0); /* on the other worker */
    assert_true(TEST_WAIT_UNTIL(crew_group_cancelled(g), SETTLE));
    gate_open(grp, 1);
    ASSERT_RC(crew_group_wait(g, LONG_WAIT), -5);
    assert_int_equal(atomic_load(&grp->finished), 2);
    crew_group_free(g);
    pool_end(p);
    grp_teardown(false);
}

/* cancel: the queued tasks are skipped, the running one finishes, wait says
 * CREW_ECANCELED and renews the group. Cancelling an empty group makes its
 * next wait CREW_ECANCELED. */
static void test_group_cancel(void **state) {
    grp_setup();
    crew_pool *p = pool_with(KIND, 1, 0);
    crew_group *g = group_new(p);
    run_held(g, 0);
    for (int i = 0; i < 20; i++) ASSERT_RC(crew_group_run(g, g_mark, NULL), 0); /* < 64: queued */
    ASSERT_RC(crew_group_wait(g, 0), CREW_ETIMEDOUT);
    ASSERT_RC(crew_group_cancel(g), 0);
    assert_true(crew_group_cancelled(g));
    ASSERT_RC(crew_group_cancel(g), 0);
    ASSERT_RC(crew_group_run(g, g_mark, NULL), CREW_ECANCELED);
    gate_open(grp, 0);
    ASSERT_RC(crew_group_wait(g, LONG_WAIT), CREW_ECANCELED);
    assert_false(crew_group_cancelled(g));
    assert_int_equal(atomic_load(&grp->finished), 1);
    assert_int_equal(atomic_load(&grp->marks), 0);

    for (int i = 0; i < 20; i++) ASSERT_RC(crew_group_run(g, g_mark, NULL), 0);
    ASSERT_RC(crew_group_wait(g, LONG_WAIT), 0);
    assert_int_equal(atomic_load(&grp->marks), 20);

    ASSERT_RC(crew_group_cancel(g), 0);
    ASSERT_RC(crew_group_wait(g, LONG_WAIT), CREW_ECANCELED);
    ASSERT_RC(crew_group_wait(g, LONG_WAIT), 0);
    crew_group_free(g);
    pool_end(p);
    grp_teardown(false);
}

/* THREADS (submitted): a group on its own pool; a task held on gate 1 runs
 * on another worker; waits with timeouts 0 and SHORT (helping meanwhile);
 * tells the test (marks = 1), which opens the gate; waits for good. out:
 * int64[4] {code of wait(0), code of wait(SHORT), its duration in ns, code of
 * the last wait}. */
static int t_group_timeouts(const void *in, void *out, void *ctx) {
    (void)in;
    (void)ctx;
    crew_group *g = NULL;
    int rc = crew_group_create(&g, crew_pool_current());
    if (rc != 0) return rc;
    long before = atomic_load(&grp->started);
    rc = crew_group_run(g, g_hold, &holds[1]);
    if (rc == 0 && !TEST_WAIT_UNTIL(atomic_load(&grp->started) > before, LONG_WAIT))
        rc = CREW_ETIMEDOUT;
    int64_t r[4] = {0, 0, 0, 0};
    if (rc == 0) {
        r[0] = crew_group_wait(g, 0);
        double t0 = test_now();
        r[1] = crew_group_wait(g, SHORT);
        r[2] = (int64_t)((test_now() - t0) * 1e9);
    }
    atomic_store(&grp->marks, 1);
    r[3] = crew_group_wait(g, LONG_WAIT);
    crew_group_free(g);
    memcpy(out, r, sizeof r);
    return rc;
}

/* wait with timeouts 0 and SHORT while a task runs: CREW_ETIMEDOUT, the
 * group goes on; from outside, and (thread pools) from a worker. */
static void test_group_wait_timeout(void **state) {
    grp_setup();
    crew_pool *p = pool_with(KIND, 1, 0);
    crew_group *g = group_new(p);
    run_held(g, 0);
    double t0 = test_now();
    ASSERT_RC(crew_group_wait(g, 0), CREW_ETIMEDOUT);
    assert_true(test_now() - t0 < TIME_SLACK);
    t0 = test_now();
    ASSERT_RC(crew_group_wait(g, SHORT), CREW_ETIMEDOUT);
    ASSERT_ELAPSED(test_now() - t0, SHORT);
    assert_false(crew_group_cancelled(g));
    ASSERT_RC(crew_group_wait(g, -1.0), CREW_EINVAL);
    gate_open(grp, 0);
    ASSERT_RC(crew_group_wait(g, LONG_WAIT), 0);
    assert_int_equal(atomic_load(&grp->finished), 1);
    crew_group_free(g);
    pool_end(p);

    if (KIND == CREW_THREADS) {
        p = pool_with(KIND, 2, 0);
        crew_future *f = submit_task(p, t_group_timeouts, NULL, 0, 4 * sizeof(int64_t), NULL);
        assert_true(TEST_WAIT_UNTIL(atomic_load(&grp->marks) == 1 || crew_future_done(f), SETTLE));
        gate_open(grp, 1);
        int64_t r[4] = {1, 1, 1, 1};
        ASSERT_RC(crew_future_get(f, r, LONG_WAIT), 0);
        crew_future_free(f);
        ASSERT_RC((int)r[0], CREW_ETIMEDOUT);
        ASSERT_RC((int)r[1], CREW_ETIMEDOUT);
        ASSERT_ELAPSED((double)r[2] * 1e-9, SHORT);
        ASSERT_RC((int)r[3], 0);
        assert_int_equal(atomic_load(&grp->finished), 2);
        pool_end(p);
    }
    grp_teardown(false);
}

/* THREADS_ONLY: tasks add their children to the group they run in (a
 * binary tree, from one root or several), with 1, 2 and 4 workers: every
 * node runs once. A failing leaf cancels the rest and its code, not
 * CREW_ECANCELED from a node's refused add, is the group's. */
static void test_group_recursive(void **state) {
    const size_t ws[] = {1, 2, 4};
    enum { DEPTH = 13, ROOTS = 3 };
    for (size_t k = 0; k < 3; k++) {
        crew_pool *p = pool_with(KIND, ws[k], 0);
        crew_group *g = group_new(p);
        _Atomic long nodes = 0, leaves = 0;
        tree_level lv[TREE_MAX];
        tree_init(lv, g, DEPTH, &nodes, &leaves);
        ASSERT_RC(crew_group_run(g, g_tree, &lv[DEPTH]), 0);
        ASSERT_RC(crew_group_wait(g, LONG_WAIT), 0);
        assert_int_equal(atomic_load(&nodes), tree_nodes(DEPTH));
        assert_int_equal(atomic_load(&leaves), 1L << DEPTH);

        atomic_store(&nodes, 0);
        atomic_store(&leaves, 0);
        for (int r = 0; r < ROOTS; r++) ASSERT_RC(crew_group_run(g, g_tree, &lv[DEPTH]), 0);
        ASSERT_RC(crew_group_wait(g, LONG_WAIT), 0);
        assert_int_equal(atomic_load(&nodes), ROOTS * tree_nodes(DEPTH));
        assert_int_equal(atomic_load(&leaves), ROOTS * (1L << DEPTH));

        atomic_store(&nodes, 0);
        atomic_store(&leaves, 0);
        lv[0].leaf_rc = -5;
        ASSERT_RC(crew_group_run(g, g_tree, &lv[DEPTH]), 0);
        ASSERT_RC(crew_group_wait(g, LONG_WAIT), -5);
        assert_true(atomic_load(&leaves) >= 1);
        assert_true(atomic_load(&leaves) < (1L << DEPTH));
        lv[0].leaf_rc = 0;

        atomic_store(&nodes, 0);
        atomic_store(&leaves, 0);
        ASSERT_RC(crew_group_run(g, g_tree, &lv[DEPTH]), 0);
        ASSERT_RC(crew_group_wait(g, LONG_WAIT), 0);
        assert_int_equal(atomic_load(&nodes), tree_nodes(DEPTH));
        crew_group_free(g);
        pool_end(p);
    }
}

/* Submitted tasks each grow a tree in a group of their own on their pool
 * and wait for it (a worker's nested wait; in a process pool's child the
 * group's tasks run at once there). */
static void test_group_nested_submit(void **state) {
    const size_t ws[] = {1, 3};
    enum { N = 8 };
    for (size_t k = 0; k < 2; k++) {
        crew_pool *p = pool_with(KIND, ws[k], 0);
        crew_future *fs[N];
        for (int64_t i = 0; i < N; i++) {
            int64_t depth = 5 + i;
            fs[i] = submit_task(p, t_group_tree, &depth, sizeof depth, 2 * sizeof(int64_t), NULL);
        }
        for (int64_t i = 0; i < N; i++) {
            int64_t r[2] = {-1, -1};
            ASSERT_RC(crew_future_get(fs[i], r, LONG_WAIT), 0);
            assert_int_equal(r[0], tree_nodes(5 + (int)i));
            assert_int_equal(r[1], 1L << (5 + i));
            crew_future_free(fs[i]);
        }
        pool_end(p);
    }
}

/* A group's tasks each grow a tree in an inner group and wait for it. */
static void test_group_nested_inner(void **state) {
    grp_setup();
    const size_t ws[] = {1, 3};
    enum { N = 16, DEPTH = 8 };
    for (size_t k = 0; k < 2; k++) {
        atomic_store(&grp_tree[0], 0);
        atomic_store(&grp_tree[1], 0);
        crew_pool *p = pool_with(KIND, ws[k], 0);
        crew_group *g = group_new(p);
        for (int i = 0; i < N; i++)
            ASSERT_RC(crew_group_run(g, g_inner, (void *)(intptr_t)DEPTH), 0);
        ASSERT_RC(crew_group_wait(g, LONG_WAIT), 0);
        assert_int_equal(atomic_load(&grp_tree[0]), N * tree_nodes(DEPTH));
        assert_int_equal(atomic_load(&grp_tree[1]), N * (1L << DEPTH));
        crew_group_free(g);
        pool_end(p);
    }
    grp_teardown(false);
}

/* THREADS_ONLY: what each g_note task saw, in the caller's memory. */
#define NOTE_N 1000
#define NOTE_FAIL 0x10000 /* in arg: return -9 */

typedef struct note_rec {
    _Atomic int ran;
    _Atomic int in_adder;  /* ran in thread `adder` */
    _Atomic int during;    /* ran while `adding` was set */
    _Atomic int bad;       /* crew_pool_current() or crew_pool_task_index() wrong */
} note_rec;

static struct {
    crew_pool *pool;
    crew_group *g;
    pthread_t adder;
    _Atomic int adding;
    note_rec rec[NOTE_N];
} notes;

static void notes_reset(void) {
    for (size_t i = 0; i < NOTE_N; i++) {
        note_rec *r = &notes.rec[i];
        atomic_store(&r->ran, 0);
        atomic_store(&r->in_adder, 0);
        atomic_store(&r->during, 0);
        atomic_store(&r->bad, 0);
    }
}

/* arg: index | NOTE_FAIL. */
static int g_note(void *arg) {
    intptr_t a = (intptr_t)arg, i = a & 0xffff;
    if (i >= NOTE_N) return CREW_EPROTO;
    note_rec *r = &notes.rec[i];
    atomic_fetch_add(&r->ran, 1);
    atomic_store(&r->in_adder, pthread_equal(pthread_self(), notes.adder) != 0);
    atomic_store(&r->during, atomic_load(&notes.adding));
    atomic_store(&r->bad, crew_pool_current() != notes.pool || crew_pool_task_index() != SIZE_MAX);
    return a & NOTE_FAIL ? -9 : 0;
}

/* arg: how many g_note tasks to add to notes.g, with `adding` set meanwhile. */
static int g_fan(void *arg) {
    intptr_t n = (intptr_t)arg;
    int rc = 0;
    atomic_store(&notes.adding, 1);
    for (intptr_t i = 0; i < n && rc == 0; i++) rc = crew_group_run(notes.g, g_note, (void *)i);
    atomic_store(&notes.adding, 0);
    return rc;
}

/* THREADS_ONLY, throttling (pool.h): with its only worker held by a
 * submitted task, the caller's first 64 tasks wait in the queue and the rest
 * run at once in the caller, as tasks of the pool with no index; a failure
 * of one run so goes to the group (crew_group_run returns 0) and the queued
 * ones are skipped. A worker adding to a group runs a task at once when 64
 * wait on its own deque. */
static void test_group_throttle_inline(void **state) {
    enum { Q = 64, N = 200 };
    grp_setup();
    crew_pool *p = pool_with(KIND, 1, 0);
    crew_group *g = group_new(p);
    notes.pool = p;
    notes.g = g;
    notes.adder = pthread_self();
    notes_reset();
    crew_future *a = submit_gated(p, grp, 1, 0, 0);
    assert_true(TEST_WAIT_UNTIL(crew_future_running(a), SETTLE));
    for (intptr_t i = 0; i < N; i++) ASSERT_RC(crew_group_run(g, g_note, (void *)i), 0);
    for (int i = 0; i < N; i++) {
        note_rec *r = &notes.rec[i];
        if (atomic_load(&r->ran) != (i < Q ? 0 : 1) || (i >= Q && !atomic_load(&r->in_adder)))
            fail_msg("task %d before the worker was free: ran %d times, in the caller: %d", i,
                     atomic_load(&r->ran), atomic_load(&r->in_adder));
    }
    gate_open(grp, 0);
    get_val(a, gate_result(1, 0));
    ASSERT_RC(crew_group_wait(g, LONG_WAIT), 0);
    for (int i = 0; i < N; i++) {
        note_rec *r = &notes.rec[i];
        if (atomic_load(&r->ran) != 1 || atomic_load(&r->in_adder) != (i >= Q) ||
            atomic_load(&r->bad))
            fail_msg("task %d: ran %d times, in the caller: %d, wrong pool or index: %d", i,
                     atomic_load(&r->ran), atomic_load(&r->in_adder), atomic_load(&r->bad));
    }

    notes_reset();
    a = submit_gated(p, grp, 2, 1, 0);
    assert_true(TEST_WAIT_UNTIL(crew_future_running(a), SETTLE));
    for (intptr_t i = 0; i < Q; i++) ASSERT_RC(crew_group_run(g, g_note, (void *)i), 0);
    ASSERT_RC(crew_group_run(g, g_note, (void *)(intptr_t)(Q | NOTE_FAIL)), 0);
    assert_int_equal(atomic_load(&notes.rec[Q].ran), 1);
    assert_true(crew_group_cancelled(g));
    ASSERT_RC(crew_group_run(g, g_note, (void *)(intptr_t)(Q + 1)), CREW_ECANCELED);
    gate_open(grp, 1);
    get_val(a, gate_result(2, 0));
    ASSERT_RC(crew_group_wait(g, LONG_WAIT), -9);
    for (int i = 0; i <= Q + 1; i++) assert_int_equal(atomic_load(&notes.rec[i].ran), i == Q);

    notes_reset();
    ASSERT_RC(crew_group_run(g, g_fan, (void *)(intptr_t)NOTE_N), 0); /* the worker adds */
    ASSERT_RC(crew_group_wait(g, LONG_WAIT), 0);
    for (int i = 0; i < NOTE_N; i++) {
        note_rec *r = &notes.rec[i];
        if (atomic_load(&r->ran) != 1 || atomic_load(&r->during) != (i >= Q) ||
            atomic_load(&r->bad))
            fail_msg("task %d added by a worker: ran %d times, while adding: %d, wrong pool or "
                     "index: %d",
                     i, atomic_load(&r->ran), atomic_load(&r->during), atomic_load(&r->bad));
    }
    crew_group_free(g);
    pool_end(p);
    grp_teardown(false);
}

/* A held task then a tree in its group: for adds after close. */
static int g_hold_tree(void *arg) {
    if (crew_event_wait(&grp->ev[1], LONG_WAIT) != 0) return CREW_ETIMEDOUT;
    return g_tree(arg);
}

/* close: adds from outside get CREW_ESHUTDOWN, what was accepted runs to the
 * end, the group's own tasks may still add (thread pools). */
static void test_group_after_close(void **state) {
    grp_setup();
    crew_pool *p = pool_with(KIND, 1, 0);
    crew_group *g = group_new(p);
    crew_group *g2 = group_new(p);
    _Atomic long nodes = 0, leaves = 0;
    tree_level lv[TREE_MAX];
    tree_init(lv, g2, 6, &nodes, &leaves);
    run_held(g, 0);
    for (int i = 0; i < 5; i++) ASSERT_RC(crew_group_run(g, g_mark, NULL), 0);
    if (KIND == CREW_THREADS) ASSERT_RC(crew_group_run(g2, g_hold_tree, &lv[6]), 0);
    ASSERT_RC(crew_pool_close(p), 0);
    ASSERT_RC(crew_group_run(g, g_mark, NULL), CREW_ESHUTDOWN);
    ASSERT_RC(crew_group_run(g2, g_mark, NULL), CREW_ESHUTDOWN);
    assert_false(crew_group_cancelled(g));
    gate_open(grp, 0);
    gate_open(grp, 1);
    ASSERT_RC(crew_group_wait(g, LONG_WAIT), 0);
    ASSERT_RC(crew_group_wait(g2, LONG_WAIT), 0);
    assert_int_equal(atomic_load(&grp->finished), 1);
    assert_int_equal(atomic_load(&grp->marks), 5);
    if (KIND == CREW_THREADS) assert_int_equal(atomic_load(&nodes), tree_nodes(6));
    ASSERT_RC(crew_pool_join(p, LONG_WAIT), 0);
    ASSERT_RC(crew_group_run(g, g_mark, NULL), CREW_ESHUTDOWN);
    ASSERT_RC(crew_group_wait(g, 0), 0);
    crew_group_free(g);
    crew_group_free(g2);
    crew_pool_free(p);
    assert_int_equal(atomic_load(&grp->marks), 5);
    grp_teardown(false);
}

/* terminate: queued tasks are dropped (wait says CREW_ECANCELED), the
 * running one finishes (threads) or dies with its worker process; adds
 * from outside get CREW_ESHUTDOWN (or CREW_ECANCELED in a group whose
 * tasks were dropped: it is cancelled). */
static void test_group_terminate(void **state) {
    const bool procs = KIND == CREW_PROCESSES;
    grp_setup();
    crew_pool *p = pool_with(KIND, 1, 0);
    crew_group *g = group_new(p);
    run_held(g, 0);
    for (int i = 0; i < 10; i++) ASSERT_RC(crew_group_run(g, g_mark, NULL), 0);
    crew_group *g2 = group_new(p);
    ASSERT_RC(crew_pool_terminate(p), 0);
    ASSERT_RC(crew_group_run(g2, g_mark, NULL), CREW_ESHUTDOWN);
    assert_true(crew_group_cancelled(g)); /* its queued tasks were dropped */
    ASSERT_RC(crew_group_run(g, g_mark, NULL), CREW_ECANCELED);
    if (!procs) ASSERT_RC(crew_group_wait(g, SHORT), CREW_ETIMEDOUT); /* the held one runs */
    gate_open(grp, 0);
    ASSERT_RC(crew_group_wait(g, LONG_WAIT), CREW_ECANCELED);
    ASSERT_RC(crew_pool_join(p, LONG_WAIT), 0);
    assert_int_equal(atomic_load(&grp->marks), 0);
    assert_int_equal(atomic_load(&grp->finished), procs ? 0 : 1);
    ASSERT_RC(crew_group_wait(g2, 0), 0);
    crew_group_free(g);
    crew_group_free(g2);
    crew_pool_free(p);
    grp_teardown(procs);
}

/* THREADS (arg: its group): adds 10 g_mark tasks (onto its worker's own
 * deque), counts its start, then waits for gate 1. */
static int g_add_then_hold(void *arg) {
    for (int i = 0; i < 10; i++) {
        int rc = crew_group_run(arg, g_mark, NULL);
        if (rc != 0) return rc;
    }
    atomic_fetch_add(&grp->started, 1);
    if (crew_event_wait(&grp->ev[1], LONG_WAIT) != 0) return CREW_ETIMEDOUT;
    atomic_fetch_add(&grp->finished, 1);
    return 0;
}

/* THREADS_ONLY: terminate also drops the group's tasks queued on a worker's
 * own deque (added by a running task), and a wait from outside then gets
 * CREW_ECANCELED though no task failed. */
static void test_group_terminate_deque(void **state) {
    grp_setup();
    crew_pool *p = pool_with(KIND, 1, 0);
    crew_group *g = group_new(p);
    ASSERT_RC(crew_group_run(g, g_add_then_hold, g), 0);
    assert_true(TEST_WAIT_UNTIL(atomic_load(&grp->started) == 1, SETTLE));
    ASSERT_RC(crew_pool_terminate(p), 0);
    gate_open(grp, 1);
    ASSERT_RC(crew_group_wait(g, LONG_WAIT), CREW_ECANCELED);
    assert_int_equal(atomic_load(&grp->finished), 1);
    assert_int_equal(atomic_load(&grp->marks), 0);
    ASSERT_RC(crew_pool_join(p, LONG_WAIT), 0);
    crew_group_free(g);
    crew_pool_free(p);
    grp_teardown(false);
}

/* arg: a future (no result) to complete. */
static int g_complete(void *arg) { return crew_future_set_result(arg, NULL); }

typedef struct credit_ctx {
    crew_future *fx;
    gates *g;
} credit_ctx;

/* THREADS (submitted; ctx: credit_ctx): waits for fx (its worker helps
 * meanwhile), counts its start in g, then waits for g's gate 2. */
static int t_help_then_hold(const void *in, void *out, void *ctx) {
    (void)in;
    (void)out;
    credit_ctx *c = ctx;
    int rc = crew_future_get(c->fx, NULL, LONG_WAIT);
    if (rc != 0) return rc;
    atomic_fetch_add(&c->g->started, 1);
    if (crew_event_wait(&c->g->ev[2], LONG_WAIT) != 0) return CREW_ETIMEDOUT;
    return 0;
}

/* THREADS_ONLY: a group's wait returns once its tasks are done, though the
 * worker that ran them last goes on at once with something that lasts: a
 * task of another group, a submitted task, or (having run them while it
 * helped in a wait) the rest of the task that waited. */
static void test_group_credit_released(void **state) {
    grp_setup();
    gates *gb = gates_new();
    crew_pool *p = pool_with(KIND, 1, 0);
    crew_group *g1 = group_new(p), *g2 = group_new(p);

    crew_future *a = submit_gated(p, gb, 1, 0, 0);
    assert_true(TEST_WAIT_UNTIL(crew_future_running(a), SETTLE));
    for (int i = 0; i < 20; i++) ASSERT_RC(crew_group_run(g1, g_mark, NULL), 0);
    ASSERT_RC(crew_group_run(g2, g_hold, &holds[0]), 0); /* after them */
    gate_open(gb, 0);
    get_val(a, gate_result(1, 0));
    ASSERT_RC(crew_group_wait(g1, LONG_WAIT), 0);
    assert_int_equal(atomic_load(&grp->marks), 20);
    ASSERT_RC(crew_group_wait(g2, 0), CREW_ETIMEDOUT);
    gate_open(grp, 0);
    ASSERT_RC(crew_group_wait(g2, LONG_WAIT), 0);

    a = submit_gated(p, gb, 2, 1, 0);
    assert_true(TEST_WAIT_UNTIL(crew_future_running(a), SETTLE));
    for (int i = 0; i < 20; i++) ASSERT_RC(crew_group_run(g1, g_mark, NULL), 0);
    crew_future *b = submit_gated(p, grp, 3, 1, 0); /* after them */
    gate_open(gb, 1);
    get_val(a, gate_result(2, 0));
    ASSERT_RC(crew_group_wait(g1, LONG_WAIT), 0);
    assert_int_equal(atomic_load(&grp->marks), 40);
    assert_false(crew_future_done(b));
    gate_open(grp, 1);
    get_val(b, gate_result(3, 0));

    crew_future *fx = NULL;
    ASSERT_RC(crew_future_create(&fx, 0), 0);
    credit_ctx c = {fx, gb};
    crew_future *s = submit_task(p, t_help_then_hold, NULL, 0, 0, &c);
    assert_true(TEST_WAIT_UNTIL(crew_future_running(s), SETTLE));
    for (int i = 0; i < 19; i++) ASSERT_RC(crew_group_run(g1, g_mark, NULL), 0);
    ASSERT_RC(crew_group_run(g1, g_complete, fx), 0); /* the last one */
    assert_true(TEST_WAIT_UNTIL(atomic_load(&gb->started) == 3 || crew_future_done(s), SETTLE));
    ASSERT_RC(crew_group_wait(g1, LONG_WAIT), 0);
    assert_int_equal(atomic_load(&grp->marks), 59);
    assert_false(crew_future_done(s));
    gate_open(gb, 2);
    ASSERT_RC(crew_future_get(s, NULL, LONG_WAIT), 0);
    crew_future_free(s);
    crew_future_free(fx);

    crew_group_free(g1);
    crew_group_free(g2);
    pool_end(p);
    gates_free(gb);
    grp_teardown(false);
}

static int op_group_free(helper *h) {
    crew_group_free(h->group);
    return 0;
}

/* crew_group_free with a task running: cancels the queued ones and blocks
 * until the running one ends. */
static void test_group_free_waits(void **state) {
    grp_setup();
    crew_pool *p = pool_with(KIND, 1, 0);
    crew_group *g = group_new(p);
    run_held(g, 0);
    for (int i = 0; i < 5; i++) ASSERT_RC(crew_group_run(g, g_mark, NULL), 0);
    helper h = {.group = g};
    helper_start(&h, op_group_free);
    assert_blocked(&h);
    assert_int_equal(atomic_load(&grp->finished), 0);
    gate_open(grp, 0);
    th_join(h.th);
    ASSERT_RC(h.rc, 0);
    assert_int_equal(atomic_load(&grp->finished), 1);
    assert_int_equal(atomic_load(&grp->marks), 0);
    g = group_new(p); /* the pool goes on */
    for (int i = 0; i < 5; i++) ASSERT_RC(crew_group_run(g, g_mark, NULL), 0);
    crew_group_free(g); /* waits for them (or skips them): none left over */
    assert_true(atomic_load(&grp->marks) <= 5);
    pool_end(p);
    grp_teardown(false);
}

static void test_group_null_arguments(void **state) {
    crew_pool *p = pool_with(KIND, 1, 0);
    crew_group *g = NULL;
    ASSERT_RC(crew_group_create(NULL, p), CREW_EINVAL);
    ASSERT_RC(crew_group_create(&g, NULL), CREW_EINVAL);
    assert_null(g);
    g = group_new(p);
    ASSERT_RC(crew_group_run(NULL, g_ret, NULL), CREW_EINVAL);
    ASSERT_RC(crew_group_run(g, NULL, NULL), CREW_EINVAL);
    ASSERT_RC(crew_group_wait(NULL, 0), CREW_EINVAL);
    ASSERT_RC(crew_group_wait(NULL, LONG_WAIT), CREW_EINVAL);
    ASSERT_RC(crew_group_wait(g, -1.0), CREW_EINVAL);
    ASSERT_RC(crew_group_wait(g, NAN), CREW_EINVAL);
    ASSERT_RC(crew_group_cancel(NULL), CREW_EINVAL);
    assert_false(crew_group_cancelled(NULL));
    crew_group_free(NULL);
    assert_false(crew_group_cancelled(g)); /* none of it touched g */
    ASSERT_RC(crew_group_wait(g, 0), 0);
    crew_group_free(g);
    pool_end(p);
}

static int child_group_calls(void *arg) {
    crew_group *g = arg;
    CHILD_RC(crew_group_run(g, g_ret, NULL), CREW_ECHILD);
    CHILD_RC(crew_group_wait(g, 0), 0);
    crew_group_free(g); /* only releases memory */
    return 0;
}

/* A forked child cannot add to its parent's pool through a group. */
static void test_group_fork_child(void **state) {
    crew_pool *p = pool_with(KIND, 2, 0);
    crew_group *g = group_new(p);
    reap_ok(fork_child(child_group_calls, g));
    for (int i = 0; i < 10; i++) ASSERT_RC(crew_group_run(g, g_ret, NULL), 0);
    ASSERT_RC(crew_group_wait(g, LONG_WAIT), 0);
    crew_group_free(g);
    pool_end(p);
}

/* ------------------------------------------------------------------ main */

typedef struct pool_test {
    const char *name;
    CMUnitTestFunction fn;
    needs need;
} pool_test;

#define T(fn, need) {#fn, fn, need}

static const pool_test suite[] = {
    T(test_create_default_workers, ANY_KIND),
    T(test_create_explicit_workers, ANY_KIND),
    T(test_workers_run_concurrently, SHARED_MAP),
    T(test_create_bad_options, ANY_KIND),
    T(test_initializer_before_tasks, ANY_KIND),
    T(test_initializer_once_per_worker, THREADS_ONLY),
    T(test_initializer_fails, ANY_KIND),
    T(test_initializer_one_fails, THREADS_ONLY),
    T(test_null_arguments, ANY_KIND),
    T(test_free_null, ANY_KIND),
    T(test_submit_results, ANY_KIND),
    T(test_submit_error_code, ANY_KIND),
    T(test_submit_callbacks, ANY_KIND),
    T(test_submit_cancel_pending, SHARED_MAP),
    T(test_submit_in_copied, ANY_KIND),
    T(test_submit_in_copied_while_pending, SHARED_MAP),
    T(test_submit_in_size_zero, ANY_KIND),
    T(test_submit_max_pending, SHARED_MAP),
    T(test_map_chunk_sizes, ANY_KIND),
    T(test_map_sizes_zero, ANY_KIND),
    T(test_map_error_index, ANY_KIND),
    T(test_map_failure_skips_rest, THREADS_ONLY),
    T(test_chunk_runs_together, ANY_KIND),
    T(test_map_async, ANY_KIND),
    T(test_imap_ordered, ANY_KIND),
    T(test_imap_unordered, ANY_KIND),
    T(test_imap_lazy_bounded, ANY_KIND),
    T(test_imap_error_items, ANY_KIND),
    T(test_imap_input_error, ANY_KIND),
    T(test_imap_timeout, SHARED_MAP),
    T(test_imap_free_midstream, ANY_KIND),
    T(test_imap_free_waits_running, SHARED_MAP),
    T(test_for_each_once, SHARED_MAP),
    T(test_for_error, ANY_KIND),
    T(test_for_failure_skips_rest, THREADS_ONLY),
    T(test_reduce_int_sum, ANY_KIND),
    T(test_reduce_float_identical, ANY_KIND),
    T(test_reduce_order_and_empty, ANY_KIND),
    T(test_reduce_error, ANY_KIND),
    T(test_progress, ANY_KIND),
    T(test_progress_bar_quiet, ANY_KIND),
    T(test_wait_modes, SHARED_MAP),
    T(test_wait_and_iter_quick, ANY_KIND),
    T(test_future_get_timeout, SHARED_MAP),
    T(test_nested_for, SHARED_MAP),
    T(test_nested_reduce, ANY_KIND),
    T(test_nested_imap, ANY_KIND),
    T(test_terminate_pending, SHARED_MAP),
    T(test_terminate_idle, ANY_KIND),
    T(test_close_refuses_new_work, ANY_KIND),
    T(test_close_runs_nested, SHARED_MAP),
    T(test_join_without_close, ANY_KIND),
    T(test_join_from_task, SHARED_MAP),
    T(test_free_open_pool, ANY_KIND),
    T(test_task_index_and_current, ANY_KIND),
    T(test_rng_monte_carlo, ANY_KIND),
    T(test_fork_child, ANY_KIND),
    T(test_thread_names_and_idle, THREADS_ONLY),
    T(test_group_runs_all, SHARED_MAP),
    T(test_group_task_context, ANY_KIND),
    T(test_group_errors, ANY_KIND),
    T(test_group_first_error, SHARED_MAP),
    T(test_group_cancel, SHARED_MAP),
    T(test_group_wait_timeout, SHARED_MAP),
    T(test_group_recursive, THREADS_ONLY),
    T(test_group_nested_submit, ANY_KIND),
    T(test_group_nested_inner, SHARED_MAP),
    T(test_group_throttle_inline, THREADS_ONLY),
    T(test_group_after_close, SHARED_MAP),
    T(test_group_terminate, SHARED_MAP),
    T(test_group_terminate_deque, THREADS_ONLY),
    T(test_group_free_waits, SHARED_MAP),
    T(test_group_credit_released, THREADS_ONLY),
    T(test_group_null_arguments, ANY_KIND),
    T(test_group_fork_child, ANY_KIND),
};

/* Every test once per kind it applies to, named "<kind>:<test>". */
int main(void) {
    const size_t nk = sizeof kinds / sizeof kinds[0], ns = sizeof suite / sizeof suite[0];
    struct CMUnitTest *tests = calloc(nk * ns, sizeof *tests);
    char **names = calloc(nk * ns, sizeof *names);
    if (tests == NULL || names == NULL) return 1;
    size_t n = 0;
    for (size_t k = 0; k < nk; k++) {
        size_t skipped = 0;
        for (size_t s = 0; s < ns; s++) {
            if (!kind_has(kinds[k], suite[s].need)) {
                skipped++;
                continue;
            }
            if (asprintf(&names[n], "%s:%s", kind_name(kinds[k]), suite[s].name + 5) < 0) return 1;
            tests[n] = (struct CMUnitTest){.name = names[n], .test_func = suite[s].fn,
                                           .initial_state = (void *)(uintptr_t)&kinds[k]};
            n++;
        }
        if (skipped != 0)
            printf("%s: %zu tests do not apply to this kind\n", kind_name(kinds[k]), skipped);
    }
    int rc = test_run_forked("test_pool", tests, n);
    for (size_t i = 0; i < n; i++) free(names[i]);
    free(names);
    free(tests);
    return rc;
}
