/* Unit tests for the queue module: FIFO, LIFO and priority queues, private
 * and CREW_SHARED, made by crew_queue_create, in the arena, or built with
 * crew_queue_init in caller memory (malloc, a MAP_SHARED mapping, a named
 * POSIX segment attached at other addresses), used by threads and by forked
 * processes, including processes that are killed in the middle of a put or a
 * get.
 *
 * The cases follow CPython's Lib/test/test_queue.py where its behaviour
 * applies to C (order per kind, full/empty, timeouts, blocked put/get woken
 * by the other side, task_done/join, shutdown and shutdown(immediate)), plus
 * crew's contract from queue.h: error codes, footprint, init/destroy/attach,
 * and the crash-safety promise for shared queues (survivors never hang and
 * never see a half-written item).
 *
 * Helper threads are plain pthreads. They never call cmocka's assertions;
 * they record what happened and the main thread checks it after joining
 * them. Forked children report through their exit status and through the
 * shared mapping. Each test runs in a process of its own (see main) and forks
 * its children before it starts any thread, so ThreadSanitizer accepts every
 * fork.
 *
 * Nothing here sleeps to wait for another thread. Where a test needs a helper
 * (thread or process) to be asleep inside a call, it watches the helper's
 * kernel state in /proc until it sleeps in futex(); elsewhere it polls a
 * counter with a generous deadline. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "crew/clock.h"
#include "crew/error.h"
#include "crew/queue.h"
#include "crew/sync.h"

/* How long one test process may run before the runner kills it. */
#define TEST_PROCESS_LIMIT 240.0
#include "test_harness.h"

/* A helper thread making one queue call. */
typedef struct waiter waiter;
typedef int (*waiter_op)(waiter *w);
struct waiter {
    pthread_t th;
    waiter_op op;
    crew_queue *q;
    double timeout;
    uint64_t item;             /* put: the item; get: what it got */
    _Atomic int tid;           /* set before the call */
    _Atomic bool done;         /* set after it */
    int rc;                    /* its result; read after the join */
    double elapsed;            /* its duration */
};

static void *waiter_main(void *p) {
    waiter *w = p;
    atomic_store(&w->tid, my_tid());
    double t0 = test_now();
    w->rc = w->op(w);
    w->elapsed = test_now() - t0;
    atomic_store(&w->done, true);
    return NULL;
}

static void waiter_start(waiter *w, waiter_op op, crew_queue *q, double timeout, uint64_t item) {
    w->op = op;
    w->q = q;
    w->timeout = timeout;
    w->item = item;
    atomic_init(&w->tid, 0);
    atomic_init(&w->done, false);
    w->rc = INT_MIN;
    w->elapsed = -1;
    th_start(&w->th, waiter_main, w);
}

static int waiter_join(waiter *w) {
    th_join(w->th);
    return w->rc;
}

/* Wait until w sleeps inside its call; false if it returned or never slept. */
static bool waiter_blocked(waiter *w) {
    return thread_blocked(&w->tid, &w->done, SETTLE);
}

static int op_put(waiter *w) { return crew_queue_put(w->q, &w->item, w->timeout); }
static int op_get(waiter *w) { return crew_queue_get(w->q, &w->item, w->timeout); }
static int op_join(waiter *w) { return crew_queue_join(w->q, w->timeout); }

/* ------------------------------------------------------ forked children */

/* Kill `pid` and reap it; it must have died of that SIGKILL. */
static void kill_and_reap(pid_t pid) {
    assert_int_equal(kill(pid, SIGKILL), 0);
    int st = reap(pid);
    if (!WIFSIGNALED(st) || WTERMSIG(st) != SIGKILL) {
        print_error("child %d ended with status %#x before it was killed\n", (int)pid, st);
        fail();
    }
}

/* ------------------------------------------------------- queue factories */

/* Where a test's queue lives. */
enum where {
    W_CREATE,  /* crew_queue_create, private */
    W_INIT,    /* crew_queue_init in malloc'd memory, private */
    W_SHARED,  /* crew_queue_init(CREW_SHARED) in a MAP_SHARED mapping */
    W_ARENA,   /* crew_queue_create(CREW_SHARED), in the arena */
};

typedef struct qbox {
    crew_queue *q;
    enum where where;
    void *mem;
    size_t size;
} qbox;

static size_t round_up(size_t n, size_t a) { return (n + a - 1) / a * a; }

static void qopen(qbox *b, enum where where, crew_queue_options o) {
    b->where = where;
    b->q = NULL;
    b->mem = NULL;
    b->size = 0;
    o.flags = (where == W_SHARED || where == W_ARENA) ? CREW_SHARED : 0;
    if (where == W_CREATE || where == W_ARENA) {
        ASSERT_RC(crew_queue_create(&b->q, &o), 0);
    } else {
        b->size = crew_queue_footprint(&o);
        assert_true(b->size > 0);
        if (where == W_INIT) {
            b->mem = aligned_alloc(64, round_up(b->size, 64));
            assert_non_null(b->mem);
        } else {
            b->mem = shm_map(b->size);
        }
        ASSERT_RC(crew_queue_init(&b->q, b->mem, b->size, &o), 0);
    }
    assert_non_null(b->q);
}

static void qclose(qbox *b) {
    if (b->where == W_CREATE || b->where == W_ARENA) {
        /* A created queue is not crew_queue_destroy's to end. */
        ASSERT_RC(crew_queue_destroy(b->q), CREW_EINVAL);
        crew_queue_free(b->q);
    } else {
        ASSERT_RC(crew_queue_destroy(b->q), 0);
        if (b->where == W_INIT) free(b->mem);
        else shm_unmap(b->mem, b->size);
    }
    b->q = NULL;
}

/* Tests that run once per place: name(enum where). */
#define WHERE_VARIANTS(name)                                                    \
    static void name##_create(void **state) {                                   \
        (void)state;                                                            \
        name(W_CREATE);                                                         \
    }                                                                           \
    static void name##_init(void **state) {                                     \
        (void)state;                                                            \
        name(W_INIT);                                                           \
    }                                                                           \
    static void name##_shared(void **state) {                                   \
        (void)state;                                                            \
        name(W_SHARED);                                                         \
    }                                                                           \
    static void name##_arena(void **state) {                                    \
        (void)state;                                                            \
        name(W_ARENA);                                                          \
    }
#define ALL_WHERE(name)                                                         \
    cmocka_unit_test(name##_create), cmocka_unit_test(name##_init),             \
        cmocka_unit_test(name##_shared), cmocka_unit_test(name##_arena)

static const crew_queue_options U64_FIFO = {.item_size = sizeof(uint64_t), .capacity = 8};

static void put_ok(crew_queue *q, uint64_t v) { ASSERT_RC(crew_queue_put(q, &v, 0), 0); }

static uint64_t get_ok(crew_queue *q) {
    uint64_t v = UINT64_MAX;
    ASSERT_RC(crew_queue_get(q, &v, 0), 0);
    return v;
}

/* ================================================================ order */

static void fifo_order(enum where where) {
    qbox b;
    qopen(&b, where, U64_FIFO);
    crew_queue *q = b.q;
    for (uint64_t i = 0; i < 8; i++) put_ok(q, 100 + i);
    assert_true(crew_queue_full(q));
    for (uint64_t i = 0; i < 8; i++) assert_int_equal(get_ok(q), 100 + i);
    assert_true(crew_queue_empty(q));

    /* Many laps around the ring, with the queue at every fill level, against
     * a counter: what comes out is what went in, in order. */
    uint64_t next_in = 0, next_out = 0;
    for (int lap = 0; lap < 40; lap++) {
        int burst = 1 + lap % 8;
        for (int i = 0; i < burst && next_in - next_out < 8; i++) put_ok(q, next_in++);
        int take = 1 + (lap * 5) % 8;
        for (int i = 0; i < take && next_out < next_in; i++) assert_int_equal(get_ok(q), next_out++);
        assert_int_equal(crew_queue_size(q), (int)(next_in - next_out));
    }
    while (next_out < next_in) assert_int_equal(get_ok(q), next_out++);
    assert_true(next_in > 8 * 5);
    qclose(&b);
}
WHERE_VARIANTS(fifo_order)

static void lifo_order(enum where where) {
    qbox b;
    qopen(&b, where, (crew_queue_options){.item_size = sizeof(uint64_t), .capacity = 8, .kind = CREW_LIFO});
    crew_queue *q = b.q;
    for (uint64_t i = 0; i < 8; i++) put_ok(q, i);
    assert_true(crew_queue_full(q));
    for (uint64_t i = 8; i-- > 0;) assert_int_equal(get_ok(q), i);
    /* Interleaved: the newest is always next. */
    put_ok(q, 1);
    put_ok(q, 2);
    assert_int_equal(get_ok(q), 2);
    put_ok(q, 3);
    put_ok(q, 4);
    assert_int_equal(get_ok(q), 4);
    assert_int_equal(get_ok(q), 3);
    put_ok(q, 5);
    assert_int_equal(get_ok(q), 5);
    assert_int_equal(get_ok(q), 1);
    assert_true(crew_queue_empty(q));
    qclose(&b);
}
WHERE_VARIANTS(lifo_order)

/* The "(priority, data)" tuple: the first 8 bytes are the key. */
typedef struct pitem {
    int64_t key;
    uint64_t tag;
} pitem;

static uint64_t rng_next(uint64_t *s) {
    /* splitmix64: a fixed sequence for a fixed seed. */
    uint64_t z = (*s += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

/* A reference priority queue: an array, smallest key first, then put order
 * (tags are given in put order). */
typedef struct model {
    pitem items[256];
    int n;
} model;

static void model_put(model *m, pitem it) { m->items[m->n++] = it; }

static pitem model_get(model *m, int (*cmp)(const void *, const void *)) {
    int best = 0;
    for (int i = 1; i < m->n; i++) {
        int c = cmp ? cmp(&m->items[i], &m->items[best])
                    : (m->items[i].key > m->items[best].key) - (m->items[i].key < m->items[best].key);
        if (c < 0 || (c == 0 && m->items[i].tag < m->items[best].tag)) best = i;
    }
    pitem it = m->items[best];
    memmove(&m->items[best], &m->items[best + 1], (size_t)(m->n - best - 1) * sizeof(pitem));
    m->n--;
    return it;
}

/* Random puts and gets on a queue and the model, which must agree. */
static void priority_against_model(crew_queue *q, int cap, int64_t key_range,
                                   int (*cmp)(const void *, const void *), uint64_t seed) {
    model m = {.n = 0};
    uint64_t s = seed, tag = 0;
    for (int step = 0; step < 4000; step++) {
        bool put = m.n == 0 || (m.n < cap && rng_next(&s) % 100 < 55);
        if (put) {
            pitem it = {.key = (int64_t)(rng_next(&s) % (uint64_t)key_range) - key_range / 2, .tag = tag++};
            ASSERT_RC(crew_queue_put(q, &it, 0), 0);
            model_put(&m, it);
        } else {
            pitem got = {0, 0};
            ASSERT_RC(crew_queue_get(q, &got, 0), 0);
            pitem want = model_get(&m, cmp);
            if (got.key != want.key || got.tag != want.tag) {
                print_error("step %d: got (%lld, %llu), expected (%lld, %llu)\n", step,
                            (long long)got.key, (unsigned long long)got.tag, (long long)want.key,
                            (unsigned long long)want.tag);
                fail();
            }
        }
        assert_int_equal(crew_queue_size(q), m.n);
    }
    while (m.n > 0) {
        pitem got, want = model_get(&m, cmp);
        ASSERT_RC(crew_queue_get(q, &got, 0), 0);
        assert_int_equal(got.key, want.key);
        assert_int_equal(got.tag, want.tag);
    }
    assert_true(crew_queue_empty(q));
}

static void priority_default_order(enum where where) {
    qbox b;
    qopen(&b, where, (crew_queue_options){.item_size = sizeof(pitem), .capacity = 64, .kind = CREW_PRIORITY});
    crew_queue *q = b.q;

    /* Signed int64 order, extremes included. */
    const int64_t keys[] = {5, -3, INT64_MAX, 0, INT64_MIN, 42, -1, 1, INT64_MIN + 1, INT64_MAX - 1};
    const int64_t sorted[] = {INT64_MIN, INT64_MIN + 1, -3, -1, 0, 1, 5, 42, INT64_MAX - 1, INT64_MAX};
    for (size_t i = 0; i < 10; i++) ASSERT_RC(crew_queue_put(q, &(pitem){keys[i], i}, 0), 0);
    for (size_t i = 0; i < 10; i++) {
        pitem it;
        ASSERT_RC(crew_queue_get(q, &it, 0), 0);
        assert_int_equal(it.key, sorted[i]);
        assert_int_equal(keys[it.tag], it.key); /* the item came out whole */
    }

    /* Stability: 64 equal keys come out in the order they were put. */
    for (uint64_t i = 0; i < 64; i++) ASSERT_RC(crew_queue_put(q, &(pitem){7, i}, 0), 0);
    assert_true(crew_queue_full(q));
    for (uint64_t i = 0; i < 64; i++) {
        pitem it;
        ASSERT_RC(crew_queue_get(q, &it, 0), 0);
        assert_int_equal(it.key, 7);
        assert_int_equal(it.tag, i);
    }

    /* Stability across the heap's reshuffles: few distinct keys, many equal,
     * puts and gets interleaved. */
    priority_against_model(q, 64, 5, NULL, 1);
    priority_against_model(q, 64, 1000, NULL, 2);
    qclose(&b);
}
WHERE_VARIANTS(priority_default_order)

/* Largest key first, by a caller's order. */
static int cmp_desc(const void *a, const void *b) {
    const pitem *x = a, *y = b;
    return (x->key < y->key) - (x->key > y->key);
}

/* One-byte items ordered by a caller's function (no int64 key possible). */
static int cmp_u8(const void *a, const void *b) {
    return (int)*(const uint8_t *)a - (int)*(const uint8_t *)b;
}

static void priority_custom_order(enum where where) {
    qbox b;
    qopen(&b, where,
          (crew_queue_options){.item_size = sizeof(pitem), .capacity = 64, .kind = CREW_PRIORITY,
                               .compare = cmp_desc});
    crew_queue *q = b.q;
    const int64_t keys[] = {3, 9, -4, 9, 0, 3, 12};
    for (size_t i = 0; i < 7; i++) ASSERT_RC(crew_queue_put(q, &(pitem){keys[i], i}, 0), 0);
    const int64_t want_key[] = {12, 9, 9, 3, 3, 0, -4};
    const uint64_t want_tag[] = {6, 1, 3, 0, 5, 4, 2}; /* ties in put order */
    for (size_t i = 0; i < 7; i++) {
        pitem it;
        ASSERT_RC(crew_queue_get(q, &it, 0), 0);
        assert_int_equal(it.key, want_key[i]);
        assert_int_equal(it.tag, want_tag[i]);
    }
    priority_against_model(q, 64, 6, cmp_desc, 3);
    qclose(&b);

    /* A compare function lifts the 8-byte minimum. */
    qopen(&b, where,
          (crew_queue_options){.item_size = 1, .capacity = 16, .kind = CREW_PRIORITY, .compare = cmp_u8});
    q = b.q;
    const uint8_t in[] = {200, 3, 77, 0, 255, 3, 128};
    for (size_t i = 0; i < sizeof in; i++) ASSERT_RC(crew_queue_put(q, &in[i], 0), 0);
    const uint8_t out[] = {0, 3, 3, 77, 128, 200, 255};
    for (size_t i = 0; i < sizeof out; i++) {
        uint8_t v = 1;
        ASSERT_RC(crew_queue_get(q, &v, 0), 0);
        assert_int_equal(v, out[i]);
    }
    qclose(&b);
}
WHERE_VARIANTS(priority_custom_order)

/* Odd item sizes are copied exactly, neither more nor less. */
static void item_sizes(enum where where) {
    const size_t sizes[] = {1, 3, 7, 9, 24, 100, 4096};
    const crew_queue_kind kinds[] = {CREW_FIFO, CREW_LIFO, CREW_PRIORITY};
    for (size_t k = 0; k < 3; k++) {
        for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
            size_t n = sizes[s];
            if (kinds[k] == CREW_PRIORITY && n < 8) continue;
            qbox b;
            qopen(&b, where, (crew_queue_options){.item_size = n, .capacity = 3, .kind = kinds[k]});
            assert_int_equal(crew_queue_item_size(b.q), n);
            unsigned char *in = malloc(n), *out = malloc(n + 16);
            assert_non_null(in);
            assert_non_null(out);
            for (int round = 0; round < 3; round++) {
                for (size_t i = 0; i < n; i++) in[i] = (unsigned char)(i * 31 + round + 1);
                /* The int64 key stays equal so that order is put order. */
                if (n >= 8) memset(in, 0, 8);
                ASSERT_RC(crew_queue_put(b.q, in, 0), 0);
                memset(out, 0xa5, n + 16);
                ASSERT_RC(crew_queue_get(b.q, out, 0), 0);
                assert_memory_equal(out, in, n);
                for (size_t i = n; i < n + 16; i++) assert_int_equal(out[i], 0xa5);
            }
            free(in);
            free(out);
            qclose(&b);
        }
    }
}
WHERE_VARIANTS(item_sizes)

/* ============================================================= timeouts */

static void try_full_empty(enum where where) {
    qbox b;
    qopen(&b, where, (crew_queue_options){.item_size = sizeof(uint64_t), .capacity = 2});
    crew_queue *q = b.q;
    uint64_t v = 9;
    ASSERT_RC(crew_queue_get(q, &v, 0), CREW_EEMPTY);
    assert_int_equal(v, 9); /* untouched */
    put_ok(q, 1);
    put_ok(q, 2);
    v = 3;
    ASSERT_RC(crew_queue_put(q, &v, 0), CREW_EFULL);
    assert_int_equal(crew_queue_size(q), 2);
    assert_int_equal(get_ok(q), 1);
    assert_int_equal(get_ok(q), 2);
    ASSERT_RC(crew_queue_get(q, &v, 0), CREW_EEMPTY);
    /* A failed put counted no task. */
    ASSERT_RC(crew_queue_task_done(q), 0);
    ASSERT_RC(crew_queue_task_done(q), 0);
    ASSERT_RC(crew_queue_task_done(q), CREW_EOVERFLOW);
    qclose(&b);
}
WHERE_VARIANTS(try_full_empty)

static void timeouts_expire(enum where where) {
    qbox b;
    qopen(&b, where, (crew_queue_options){.item_size = sizeof(uint64_t), .capacity = 1});
    crew_queue *q = b.q;
    uint64_t v = 5;

    double t0 = test_now();
    ASSERT_RC(crew_queue_get(q, &v, SHORT), CREW_ETIMEDOUT);
    ASSERT_ELAPSED(test_now() - t0, SHORT);
    assert_int_equal(v, 5);

    put_ok(q, 1);
    t0 = test_now();
    ASSERT_RC(crew_queue_put(q, &v, SHORT), CREW_ETIMEDOUT);
    ASSERT_ELAPSED(test_now() - t0, SHORT);
    assert_int_equal(crew_queue_size(q), 1);

    /* From helper threads too, and a tiny positive timeout is a timeout,
     * not a try. */
    waiter w;
    waiter_start(&w, op_put, q, 0.25, 2);
    ASSERT_RC(waiter_join(&w), CREW_ETIMEDOUT);
    ASSERT_ELAPSED(w.elapsed, 0.25);
    ASSERT_RC(crew_queue_put(q, &v, 1e-6), CREW_ETIMEDOUT);
    assert_int_equal(get_ok(q), 1);
    waiter_start(&w, op_get, q, 0.25, 0);
    ASSERT_RC(waiter_join(&w), CREW_ETIMEDOUT);
    ASSERT_ELAPSED(w.elapsed, 0.25);
    ASSERT_RC(crew_queue_get(q, &v, 1e-6), CREW_ETIMEDOUT);

    /* join times out the same way while a task is unfinished. */
    put_ok(q, 3);
    t0 = test_now();
    ASSERT_RC(crew_queue_join(q, SHORT), CREW_ETIMEDOUT);
    ASSERT_ELAPSED(test_now() - t0, SHORT);
    ASSERT_RC(crew_queue_join(q, 0), CREW_ETIMEDOUT);
    assert_int_equal(get_ok(q), 3);
    /* Two puts succeeded (1 and 3); the timed-out ones counted nothing. */
    for (int i = 0; i < 2; i++) ASSERT_RC(crew_queue_task_done(q), 0);
    ASSERT_RC(crew_queue_task_done(q), CREW_EOVERFLOW);
    ASSERT_RC(crew_queue_join(q, 0), 0);

    /* Negative and NaN timeouts are refused and change nothing. */
    v = 7;
    ASSERT_RC(crew_queue_put(q, &v, -1.0), CREW_EINVAL);
    ASSERT_RC(crew_queue_put(q, &v, NAN), CREW_EINVAL);
    assert_true(crew_queue_empty(q));
    put_ok(q, 8);
    ASSERT_RC(crew_queue_get(q, &v, -0.5), CREW_EINVAL);
    ASSERT_RC(crew_queue_get(q, &v, NAN), CREW_EINVAL);
    assert_int_equal(v, 7);
    ASSERT_RC(crew_queue_join(q, -1.0), CREW_EINVAL);
    ASSERT_RC(crew_queue_join(q, NAN), CREW_EINVAL);
    assert_int_equal(get_ok(q), 8);
    qclose(&b);
}
WHERE_VARIANTS(timeouts_expire)

/* ================================================ blocking, other side */

static void blocked_get_woken_by_put(enum where where) {
    qbox b;
    qopen(&b, where, U64_FIFO);
    crew_queue *q = b.q;
    const double timeouts[] = {CREW_FOREVER, LONG_WAIT};
    for (int i = 0; i < 2; i++) {
        waiter w;
        waiter_start(&w, op_get, q, timeouts[i], 0);
        bool blocked = waiter_blocked(&w);
        put_ok(q, 0xabc0 + (uint64_t)i);
        ASSERT_RC(waiter_join(&w), 0);
        assert_true(blocked);
        assert_int_equal(w.item, 0xabc0 + (uint64_t)i);
        assert_true(w.elapsed < LONG_WAIT / 2);
        assert_true(crew_queue_empty(q));
    }

    /* Three getters, three puts: each gets one, none is lost. */
    waiter ws[3];
    for (int i = 0; i < 3; i++) waiter_start(&ws[i], op_get, q, LONG_WAIT, 0);
    bool all_blocked = true;
    for (int i = 0; i < 3; i++) all_blocked &= waiter_blocked(&ws[i]);
    for (uint64_t i = 1; i <= 3; i++) ASSERT_RC(crew_queue_put(q, &i, LONG_WAIT), 0);
    uint64_t mask = 0;
    for (int i = 0; i < 3; i++) {
        ASSERT_RC(waiter_join(&ws[i]), 0);
        mask |= 1u << ws[i].item;
    }
    assert_true(all_blocked);
    assert_int_equal(mask, 0xe);
    qclose(&b);
}
WHERE_VARIANTS(blocked_get_woken_by_put)

static void blocked_put_woken_by_get(enum where where) {
    qbox b;
    qopen(&b, where, (crew_queue_options){.item_size = sizeof(uint64_t), .capacity = 2});
    crew_queue *q = b.q;
    const double timeouts[] = {CREW_FOREVER, LONG_WAIT};
    for (int i = 0; i < 2; i++) {
        put_ok(q, 1);
        put_ok(q, 2);
        waiter w;
        waiter_start(&w, op_put, q, timeouts[i], 3);
        bool blocked = waiter_blocked(&w);
        assert_int_equal(crew_queue_size(q), 2);
        assert_int_equal(get_ok(q), 1);
        ASSERT_RC(waiter_join(&w), 0);
        assert_true(blocked);
        assert_true(w.elapsed < LONG_WAIT / 2);
        /* The blocked item went in after the ones before it. */
        assert_int_equal(get_ok(q), 2);
        assert_int_equal(get_ok(q), 3);
        assert_true(crew_queue_empty(q));
    }
    qclose(&b);
}
WHERE_VARIANTS(blocked_put_woken_by_get)

/* Producers and consumers at once: every item once. */
typedef struct mpmc {
    crew_queue *q;
    int id;
    uint64_t n;        /* per producer */
    uint64_t sum;      /* consumer: what it got */
    uint64_t count;
    int errors;
    pthread_t th;
} mpmc;

static void *mpmc_producer(void *p) {
    mpmc *a = p;
    for (uint64_t i = 0; i < a->n; i++) {
        uint64_t v = ((uint64_t)a->id << 32) | i;
        if (crew_queue_put(a->q, &v, LONG_WAIT) != 0) a->errors++;
    }
    return NULL;
}

static void *mpmc_consumer(void *p) {
    mpmc *a = p;
    uint64_t last[4] = {0, 0, 0, 0};
    bool seen[4] = {false, false, false, false};
    for (;;) {
        uint64_t v;
        int rc = crew_queue_get(a->q, &v, LONG_WAIT);
        if (rc == CREW_ESHUTDOWN) break;
        if (rc != 0) {
            a->errors++;
            break;
        }
        if (crew_queue_task_done(a->q) != 0) a->errors++;
        unsigned prod = (unsigned)(v >> 32);
        uint64_t seq = v & 0xffffffffu;
        if (prod >= 4 || (seen[prod] && seq <= last[prod])) a->errors++;
        else {
            seen[prod] = true;
            last[prod] = seq;
        }
        a->sum += v;
        a->count++;
    }
    return NULL;
}

static void threads_mpmc(enum where where) {
    qbox b;
    qopen(&b, where, (crew_queue_options){.item_size = sizeof(uint64_t), .capacity = 16});
    mpmc prod[4], cons[4];
    uint64_t n = (uint64_t)test_scaled(20000);
    for (int i = 0; i < 4; i++) {
        prod[i] = (mpmc){.q = b.q, .id = i, .n = n};
        cons[i] = (mpmc){.q = b.q, .id = i};
        th_start(&cons[i].th, mpmc_consumer, &cons[i]);
        th_start(&prod[i].th, mpmc_producer, &prod[i]);
    }
    for (int i = 0; i < 4; i++) th_join(prod[i].th);
    /* Everything put is processed once the consumers have task_done'd it. */
    ASSERT_RC(crew_queue_join(b.q, LONG_WAIT * 2), 0);
    ASSERT_RC(crew_queue_shutdown(b.q, false), 0);
    uint64_t sum = 0, count = 0, want = 0;
    for (int i = 0; i < 4; i++) {
        th_join(cons[i].th);
        assert_int_equal(prod[i].errors, 0);
        assert_int_equal(cons[i].errors, 0);
        sum += cons[i].sum;
        count += cons[i].count;
        want += ((uint64_t)i << 32) * n + n * (n - 1) / 2;
    }
    assert_int_equal(count, 4 * n);
    assert_int_equal(sum, want);
    qclose(&b);
}
WHERE_VARIANTS(threads_mpmc)

/* ============================================================ snapshots */

static void sizes_and_snapshots(enum where where) {
    qbox b;
    qopen(&b, where, (crew_queue_options){.item_size = 24, .capacity = 3});
    crew_queue *q = b.q;
    assert_int_equal(crew_queue_item_size(q), 24);
    assert_int_equal(crew_queue_capacity(q), 3);
    unsigned char item[24] = {0};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(crew_queue_size(q), i);
        assert_true(crew_queue_empty(q) == (i == 0));
        assert_false(crew_queue_full(q));
        ASSERT_RC(crew_queue_put(q, item, 0), 0);
    }
    assert_int_equal(crew_queue_size(q), 3);
    assert_true(crew_queue_full(q));
    assert_false(crew_queue_empty(q));
    for (int i = 3; i > 0; i--) {
        ASSERT_RC(crew_queue_get(q, item, 0), 0);
        assert_int_equal(crew_queue_size(q), i - 1);
        assert_false(crew_queue_full(q));
    }
    assert_true(crew_queue_empty(q));
    qclose(&b);

    /* Capacity 0 means the default, 1024. */
    qopen(&b, where, (crew_queue_options){.item_size = 4});
    assert_int_equal(crew_queue_capacity(b.q), 1024);
    for (uint32_t i = 0; i < 1024; i++) ASSERT_RC(crew_queue_put(b.q, &i, 0), 0);
    assert_true(crew_queue_full(b.q));
    uint32_t v = 0;
    ASSERT_RC(crew_queue_put(b.q, &v, 0), CREW_EFULL);
    for (uint32_t i = 0; i < 1024; i++) {
        ASSERT_RC(crew_queue_get(b.q, &v, 0), 0);
        assert_int_equal(v, i);
    }
    qclose(&b);

    /* Capacity 1. */
    qopen(&b, where, (crew_queue_options){.item_size = 8, .capacity = 1, .kind = CREW_LIFO});
    assert_int_equal(crew_queue_capacity(b.q), 1);
    put_ok(b.q, 4);
    assert_true(crew_queue_full(b.q));
    assert_int_equal(get_ok(b.q), 4);
    qclose(&b);
}
WHERE_VARIANTS(sizes_and_snapshots)

/* ========================================================= task_done/join */

typedef struct worker_arg {
    crew_queue *q;
    int n;
    _Atomic int processed;  /* counted before each task_done */
    int errors;
    pthread_t th;
} worker_arg;

static void *task_worker(void *p) {
    worker_arg *a = p;
    for (int i = 0; i < a->n; i++) {
        uint64_t v;
        if (crew_queue_get(a->q, &v, LONG_WAIT) != 0) a->errors++;
        /* Make the work take a while relative to join's wake-up: yield. */
        for (int k = 0; k < 3; k++) sched_yield();
        atomic_fetch_add(&a->processed, 1);
        if (crew_queue_task_done(a->q) != 0) a->errors++;
    }
    return NULL;
}

static void task_done_and_join(enum where where) {
    qbox b;
    qopen(&b, where, U64_FIFO);
    crew_queue *q = b.q;

    /* Nothing put: join returns at once; task_done has nothing to finish. */
    ASSERT_RC(crew_queue_join(q, 0), 0);
    ASSERT_RC(crew_queue_join(q, CREW_FOREVER), 0);
    ASSERT_RC(crew_queue_task_done(q), CREW_EOVERFLOW);

    for (uint64_t i = 0; i < 3; i++) put_ok(q, i);
    ASSERT_RC(crew_queue_join(q, 0), CREW_ETIMEDOUT);
    for (int i = 0; i < 3; i++) (void)get_ok(q);
    /* Taking an item does not finish it. */
    ASSERT_RC(crew_queue_join(q, 0), CREW_ETIMEDOUT);
    ASSERT_RC(crew_queue_task_done(q), 0);
    ASSERT_RC(crew_queue_task_done(q), 0);
    ASSERT_RC(crew_queue_join(q, SHORT), CREW_ETIMEDOUT);

    /* A thread blocked in join is released by the last task_done, not before. */
    waiter w;
    waiter_start(&w, op_join, q, LONG_WAIT, 0);
    bool blocked = waiter_blocked(&w);
    ASSERT_RC(crew_queue_task_done(q), 0);
    ASSERT_RC(waiter_join(&w), 0);
    assert_true(blocked);
    ASSERT_RC(crew_queue_task_done(q), CREW_EOVERFLOW);
    ASSERT_RC(crew_queue_join(q, 0), 0);

    /* task_done may also run ahead of get (it counts puts, not gets). */
    put_ok(q, 1);
    ASSERT_RC(crew_queue_task_done(q), 0);
    ASSERT_RC(crew_queue_join(q, 0), 0);
    ASSERT_RC(crew_queue_task_done(q), CREW_EOVERFLOW);
    assert_int_equal(get_ok(q), 1);

    /* The JoinableQueue pattern: join returns only after a worker has
     * task_done'd every item. */
    worker_arg wa = {.q = q, .n = (int)test_scaled(200)};
    atomic_init(&wa.processed, 0);
    th_start(&wa.th, task_worker, &wa);
    for (int i = 0; i < wa.n; i++) {
        uint64_t v = (uint64_t)i;
        ASSERT_RC(crew_queue_put(q, &v, LONG_WAIT), 0);
    }
    ASSERT_RC(crew_queue_join(q, LONG_WAIT), 0);
    int at_join = atomic_load(&wa.processed);
    th_join(wa.th);
    assert_int_equal(wa.errors, 0);
    assert_int_equal(at_join, wa.n);
    ASSERT_RC(crew_queue_task_done(q), CREW_EOVERFLOW);

    /* Two joiners are both released. */
    put_ok(q, 5);
    waiter j1, j2;
    waiter_start(&j1, op_join, q, LONG_WAIT, 0);
    waiter_start(&j2, op_join, q, CREW_FOREVER, 0);
    bool b1 = waiter_blocked(&j1), b2 = waiter_blocked(&j2);
    assert_int_equal(get_ok(q), 5);
    ASSERT_RC(crew_queue_task_done(q), 0);
    ASSERT_RC(waiter_join(&j1), 0);
    ASSERT_RC(waiter_join(&j2), 0);
    assert_true(b1 && b2);
    qclose(&b);
}
WHERE_VARIANTS(task_done_and_join)

/* ============================================================= shutdown */

static void shutdown_graceful(enum where where) {
    qbox b;
    qopen(&b, where, U64_FIFO);
    crew_queue *q = b.q;
    for (uint64_t i = 0; i < 3; i++) put_ok(q, 10 + i);
    ASSERT_RC(crew_queue_shutdown(q, false), 0);

    /* Puts fail at once, whatever their timeout. */
    uint64_t v = 99;
    double t0 = test_now();
    ASSERT_RC(crew_queue_put(q, &v, 0), CREW_ESHUTDOWN);
    ASSERT_RC(crew_queue_put(q, &v, LONG_WAIT), CREW_ESHUTDOWN);
    ASSERT_RC(crew_queue_put(q, &v, CREW_FOREVER), CREW_ESHUTDOWN);
    assert_true(test_now() - t0 < TIME_SLACK);
    assert_int_equal(crew_queue_size(q), 3);

    /* Gets drain what is left, in order, then fail at once. */
    for (uint64_t i = 0; i < 3; i++) {
        ASSERT_RC(crew_queue_get(q, &v, LONG_WAIT), 0);
        assert_int_equal(v, 10 + i);
    }
    t0 = test_now();
    ASSERT_RC(crew_queue_get(q, &v, 0), CREW_ESHUTDOWN);
    ASSERT_RC(crew_queue_get(q, &v, LONG_WAIT), CREW_ESHUTDOWN);
    ASSERT_RC(crew_queue_get(q, &v, CREW_FOREVER), CREW_ESHUTDOWN);
    assert_true(test_now() - t0 < TIME_SLACK);
    assert_true(crew_queue_empty(q));

    /* Idempotent; the three tasks are still unfinished and can be finished. */
    ASSERT_RC(crew_queue_shutdown(q, false), 0);
    ASSERT_RC(crew_queue_join(q, 0), CREW_ETIMEDOUT);
    for (int i = 0; i < 3; i++) ASSERT_RC(crew_queue_task_done(q), 0);
    ASSERT_RC(crew_queue_task_done(q), CREW_EOVERFLOW);
    ASSERT_RC(crew_queue_join(q, 0), 0);
    qclose(&b);
}
WHERE_VARIANTS(shutdown_graceful)

static void shutdown_wakes_getters(enum where where) {
    qbox b;
    qopen(&b, where, U64_FIFO);
    waiter ws[3];
    const double timeouts[] = {CREW_FOREVER, LONG_WAIT, CREW_FOREVER};
    for (int i = 0; i < 3; i++) waiter_start(&ws[i], op_get, b.q, timeouts[i], 7);
    bool blocked = true;
    for (int i = 0; i < 3; i++) blocked &= waiter_blocked(&ws[i]);
    ASSERT_RC(crew_queue_shutdown(b.q, false), 0);
    for (int i = 0; i < 3; i++) {
        ASSERT_RC(waiter_join(&ws[i]), CREW_ESHUTDOWN);
        assert_int_equal(ws[i].item, 7);
        assert_true(ws[i].elapsed < LONG_WAIT / 2);
    }
    assert_true(blocked);
    qclose(&b);
}
WHERE_VARIANTS(shutdown_wakes_getters)

static void shutdown_wakes_putters(enum where where) {
    qbox b;
    qopen(&b, where, (crew_queue_options){.item_size = sizeof(uint64_t), .capacity = 2});
    crew_queue *q = b.q;
    put_ok(q, 1);
    put_ok(q, 2);
    waiter ws[2];
    waiter_start(&ws[0], op_put, q, CREW_FOREVER, 3);
    waiter_start(&ws[1], op_put, q, LONG_WAIT, 4);
    bool blocked = waiter_blocked(&ws[0]) && waiter_blocked(&ws[1]);
    ASSERT_RC(crew_queue_shutdown(q, false), 0);
    for (int i = 0; i < 2; i++) {
        ASSERT_RC(waiter_join(&ws[i]), CREW_ESHUTDOWN);
        assert_true(ws[i].elapsed < LONG_WAIT / 2);
    }
    assert_true(blocked);
    /* The items already in stay, and drain. */
    assert_int_equal(crew_queue_size(q), 2);
    assert_int_equal(get_ok(q), 1);
    assert_int_equal(get_ok(q), 2);
    uint64_t v;
    ASSERT_RC(crew_queue_get(q, &v, 0), CREW_ESHUTDOWN);
    qclose(&b);
}
WHERE_VARIANTS(shutdown_wakes_putters)

static void shutdown_immediate(enum where where) {
    qbox b;
    qopen(&b, where, U64_FIFO);
    crew_queue *q = b.q;

    /* 5 put, 2 taken, 1 of them finished: 4 unfinished, 3 of them in the
     * queue. The immediate shutdown discards those 3 as if task_done'd, so
     * a joiner still waits for the one taken and not finished. */
    for (uint64_t i = 0; i < 5; i++) put_ok(q, i);
    (void)get_ok(q);
    (void)get_ok(q);
    ASSERT_RC(crew_queue_task_done(q), 0);
    waiter j, g;
    waiter_start(&j, op_join, q, LONG_WAIT, 0);
    bool blocked = waiter_blocked(&j);
    ASSERT_RC(crew_queue_shutdown(q, true), 0);
    assert_int_equal(crew_queue_size(q), 0);
    assert_true(crew_queue_empty(q));
    /* The joiner must still be waiting (it may have been woken to re-check). */
    ASSERT_RC(crew_queue_join(q, 0), CREW_ETIMEDOUT);
    bool still_waiting = !atomic_load(&j.done);
    ASSERT_RC(crew_queue_task_done(q), 0);
    ASSERT_RC(waiter_join(&j), 0);
    assert_true(blocked);
    assert_true(still_waiting);
    ASSERT_RC(crew_queue_task_done(q), CREW_EOVERFLOW);
    uint64_t v;
    ASSERT_RC(crew_queue_get(q, &v, 0), CREW_ESHUTDOWN);
    ASSERT_RC(crew_queue_put(q, &v, 0), CREW_ESHUTDOWN);
    qclose(&b);

    /* Everything unfinished is in the queue: the shutdown discards it all
     * and releases the joiner. */
    qopen(&b, where, U64_FIFO);
    q = b.q;
    for (uint64_t i = 0; i < 3; i++) put_ok(q, i);
    waiter_start(&j, op_join, q, CREW_FOREVER, 0);
    blocked = waiter_blocked(&j);
    ASSERT_RC(crew_queue_shutdown(q, true), 0);
    ASSERT_RC(waiter_join(&j), 0);
    assert_true(blocked);
    assert_true(j.elapsed < LONG_WAIT);
    assert_int_equal(crew_queue_size(q), 0);
    ASSERT_RC(crew_queue_join(q, 0), 0);
    ASSERT_RC(crew_queue_task_done(q), CREW_EOVERFLOW);
    qclose(&b);

    /* Immediate after graceful: discards what graceful left; and it wakes a
     * blocked getter and a blocked putter. */
    qopen(&b, where, (crew_queue_options){.item_size = sizeof(uint64_t), .capacity = 2});
    q = b.q;
    waiter_start(&g, op_get, q, CREW_FOREVER, 0);
    blocked = waiter_blocked(&g);
    ASSERT_RC(crew_queue_shutdown(q, true), 0);
    ASSERT_RC(waiter_join(&g), CREW_ESHUTDOWN);
    assert_true(blocked);
    qclose(&b);

    qopen(&b, where, (crew_queue_options){.item_size = sizeof(uint64_t), .capacity = 2});
    q = b.q;
    put_ok(q, 1);
    put_ok(q, 2);
    waiter p;
    waiter_start(&p, op_put, q, CREW_FOREVER, 3);
    blocked = waiter_blocked(&p);
    ASSERT_RC(crew_queue_shutdown(q, false), 0);
    ASSERT_RC(waiter_join(&p), CREW_ESHUTDOWN);
    assert_int_equal(crew_queue_size(q), 2);
    ASSERT_RC(crew_queue_shutdown(q, true), 0);
    assert_int_equal(crew_queue_size(q), 0);
    ASSERT_RC(crew_queue_get(q, &v, 0), CREW_ESHUTDOWN);
    ASSERT_RC(crew_queue_join(q, 0), 0);
    /* And graceful after immediate does not undo it. */
    ASSERT_RC(crew_queue_shutdown(q, false), 0);
    ASSERT_RC(crew_queue_put(q, &v, 0), CREW_ESHUTDOWN);
    assert_true(blocked);
    qclose(&b);
}
WHERE_VARIANTS(shutdown_immediate)

/* ============================================ options, arguments, init */

static void test_invalid_options(void **state) {
    (void)state;
    const crew_queue_options bad[] = {
        {.item_size = 0, .capacity = 4},
        {.item_size = 8, .capacity = 4, .kind = (crew_queue_kind)3},
        {.item_size = 8, .capacity = 4, .kind = (crew_queue_kind)-1},
        {.item_size = 8, .capacity = 4, .flags = 2},
        {.item_size = 8, .capacity = 4, .flags = CREW_SHARED | 0x80000000u},
        {.item_size = 7, .capacity = 4, .kind = CREW_PRIORITY},
        {.item_size = 1, .capacity = 4, .kind = CREW_PRIORITY},
        {.item_size = SIZE_MAX, .capacity = 4},
        {.item_size = SIZE_MAX / 2, .capacity = 4, .kind = CREW_LIFO},
        {.item_size = (size_t)1 << 40, .capacity = (size_t)1 << 30},
        /* Items times capacity just below SIZE_MAX: the whole block, with
         * the priority heap after the slots, does not fit in a size_t. */
        {.item_size = ((size_t)1 << 40) - 16, .capacity = (size_t)1 << 24, .kind = CREW_PRIORITY},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (crew_queue_footprint(&bad[i]) != 0) {
            print_error("options %zu: footprint %zu, expected 0\n", i, crew_queue_footprint(&bad[i]));
            fail();
        }
        crew_queue *q = NULL;
        int rc = crew_queue_create(&q, &bad[i]);
        if (rc != CREW_EINVAL) {
            print_error("options %zu: create returned %d (%s)\n", i, rc, crew_err_name(rc));
            fail();
        }
        crew_queue_options shared = bad[i];
        shared.flags |= CREW_SHARED;
        ASSERT_RC(crew_queue_create(&q, &shared), CREW_EINVAL);
        static _Alignas(64) unsigned char mem[65536];
        ASSERT_RC(crew_queue_init(&q, mem, sizeof mem, &bad[i]), CREW_EINVAL);
    }
    assert_int_equal(crew_queue_footprint(NULL), 0);

    /* The valid neighbours of those. */
    const crew_queue_options good[] = {
        {.item_size = 1, .capacity = 1},
        {.item_size = 8, .kind = CREW_PRIORITY},
        {.item_size = 1, .kind = CREW_PRIORITY, .compare = cmp_u8},
        {.item_size = 8, .kind = CREW_LIFO, .flags = CREW_SHARED},
        {.item_size = 8, .capacity = 4, .kind = CREW_FIFO, .compare = cmp_u8}, /* ignored */
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        size_t fp = crew_queue_footprint(&good[i]);
        size_t cap = good[i].capacity ? good[i].capacity : 1024;
        assert_true(fp >= good[i].item_size * cap);
        crew_queue *q = NULL;
        ASSERT_RC(crew_queue_create(&q, &good[i]), 0);
        assert_int_equal(crew_queue_capacity(q), cap);
        crew_queue_free(q);
    }

    /* NULL arguments. */
    crew_queue *q = NULL;
    ASSERT_RC(crew_queue_create(NULL, &good[0]), CREW_EINVAL);
    ASSERT_RC(crew_queue_create(&q, NULL), CREW_EINVAL);
    assert_null(q);
    uint64_t v = 0;
    ASSERT_RC(crew_queue_put(NULL, &v, 0), CREW_EINVAL);
    ASSERT_RC(crew_queue_get(NULL, &v, 0), CREW_EINVAL);
    ASSERT_RC(crew_queue_task_done(NULL), CREW_EINVAL);
    ASSERT_RC(crew_queue_join(NULL, 0), CREW_EINVAL);
    ASSERT_RC(crew_queue_shutdown(NULL, false), CREW_EINVAL);
    ASSERT_RC(crew_queue_shutdown(NULL, true), CREW_EINVAL);
    ASSERT_RC(crew_queue_destroy(NULL), CREW_EINVAL);
    ASSERT_RC(crew_queue_attach(NULL, &v), CREW_EINVAL);
    ASSERT_RC(crew_queue_attach(&q, NULL), CREW_EINVAL);
    assert_true(crew_queue_size(NULL) < 0);
    assert_false(crew_queue_empty(NULL));
    assert_false(crew_queue_full(NULL));
    assert_int_equal(crew_queue_item_size(NULL), 0);
    assert_int_equal(crew_queue_capacity(NULL), 0);
    crew_queue_free(NULL);

    ASSERT_RC(crew_queue_create(&q, &U64_FIFO), 0);
    put_ok(q, 1);
    ASSERT_RC(crew_queue_put(q, NULL, 0), CREW_EINVAL);
    ASSERT_RC(crew_queue_get(q, NULL, 0), CREW_EINVAL);
    assert_int_equal(crew_queue_size(q), 1);
    assert_int_equal(get_ok(q), 1);
    crew_queue_free(q);
}

/* init refuses what it cannot use, and writes nothing past `size`. */
static void test_init_refusals(void **state) {
    (void)state;
    /* Static, so that a failed assertion leaks nothing. */
    static _Alignas(64) unsigned char mem[1 << 16];
    const size_t total = sizeof mem;
    crew_queue_options o = U64_FIFO;
    size_t fp = crew_queue_footprint(&o);
    assert_true(fp > 0 && fp < total);
    crew_queue *q = NULL;

    ASSERT_RC(crew_queue_init(NULL, mem, total, &o), CREW_EINVAL);
    ASSERT_RC(crew_queue_init(&q, NULL, total, &o), CREW_EINVAL);
    ASSERT_RC(crew_queue_init(&q, mem + 1, total - 64, &o), CREW_EINVAL);
    assert_null(q);

    const size_t short_sizes[] = {0, 1, 16, 64, fp - 1};
    for (size_t i = 0; i < sizeof short_sizes / sizeof short_sizes[0]; i++) {
        size_t sz = short_sizes[i];
        memset(mem, 0x5a, total);
        ASSERT_RC(crew_queue_init(&q, mem, sz, &o), CREW_EINVAL);
        assert_null(q);
        for (size_t k = sz; k < total; k++) {
            if (mem[k] != 0x5a) {
                print_error("init with size %zu wrote byte %zu\n", sz, k);
                fail();
            }
        }
        ASSERT_RC(crew_queue_attach(&q, mem), CREW_EINVAL);
    }
    /* Invalid options with a NULL opts pointer or a zero size. */
    memset(mem, 0x5a, total);
    ASSERT_RC(crew_queue_init(&q, mem, 0, NULL), CREW_EINVAL);
    for (size_t k = 0; k < total; k++) {
        if (mem[k] != 0x5a) {
            print_error("init with NULL options and size 0 wrote byte %zu\n", k);
            fail();
        }
    }

    /* Exactly the footprint is enough. */
    ASSERT_RC(crew_queue_init(&q, mem, fp, &o), 0);
    for (uint64_t i = 0; i < 8; i++) put_ok(q, i);
    for (uint64_t i = 0; i < 8; i++) assert_int_equal(get_ok(q), i);
    ASSERT_RC(crew_queue_destroy(q), 0);
}

static void init_destroy(enum where where) {
    /* Caller memory that free() must not touch: a mapping. */
    crew_queue_options o = U64_FIFO;
    o.flags = where == W_SHARED ? CREW_SHARED : 0;
    size_t fp = crew_queue_footprint(&o);
    void *mem = shm_map(fp);
    crew_queue *q = NULL;
    ASSERT_RC(crew_queue_init(&q, mem, fp, &o), 0);
    put_ok(q, 1);

    /* crew_queue_free is not for init'd queues and leaves them working. */
    crew_queue_free(q);
    put_ok(q, 2);
    assert_int_equal(get_ok(q), 1);
    assert_int_equal(get_ok(q), 2);

    /* attach finds a shared queue in the same memory; it is for shared
     * queues only, so a private one is refused. */
    crew_queue *a = NULL;
    if (where == W_SHARED) {
        ASSERT_RC(crew_queue_attach(&a, mem), 0);
        put_ok(a, 3);
        assert_int_equal(get_ok(q), 3);
    } else {
        ASSERT_RC(crew_queue_attach(&a, mem), CREW_EINVAL);
        assert_null(a);
    }

    ASSERT_RC(crew_queue_destroy(q), 0);
    /* A destroyed queue is no queue. */
    uint64_t v = 0;
    ASSERT_RC(crew_queue_destroy(q), CREW_EINVAL);
    ASSERT_RC(crew_queue_put(q, &v, 0), CREW_EINVAL);
    ASSERT_RC(crew_queue_get(q, &v, 0), CREW_EINVAL);
    ASSERT_RC(crew_queue_attach(&a, mem), CREW_EINVAL);
    assert_true(crew_queue_size(q) < 0);
    assert_int_equal(crew_queue_capacity(q), 0);

    /* The memory can hold a new queue, of another kind. */
    crew_queue_options o2 = {.item_size = 8, .capacity = 4, .kind = CREW_LIFO, .flags = o.flags};
    assert_true(crew_queue_footprint(&o2) <= fp);
    ASSERT_RC(crew_queue_init(&q, mem, fp, &o2), 0);
    put_ok(q, 1);
    put_ok(q, 2);
    assert_int_equal(get_ok(q), 2);
    ASSERT_RC(crew_queue_destroy(q), 0);
    shm_unmap(mem, fp);

    /* destroy is not for created queues, and leaves them working. */
    o.flags = where == W_SHARED ? CREW_SHARED : 0;
    ASSERT_RC(crew_queue_create(&q, &o), 0);
    ASSERT_RC(crew_queue_destroy(q), CREW_EINVAL);
    put_ok(q, 5);
    assert_int_equal(get_ok(q), 5);
    crew_queue_free(q);
}
static void test_init_destroy_private(void **state) {
    (void)state;
    init_destroy(W_INIT);
}
static void test_init_destroy_shared(void **state) {
    (void)state;
    init_destroy(W_SHARED);
}

static void test_attach_garbage(void **state) {
    (void)state;
    const size_t size = 1 << 16;
    unsigned char *mem = aligned_alloc(64, size);
    assert_non_null(mem);
    crew_queue *q = NULL;
    memset(mem, 0, size);
    ASSERT_RC(crew_queue_attach(&q, mem), CREW_EINVAL);
    memset(mem, 0xff, size);
    ASSERT_RC(crew_queue_attach(&q, mem), CREW_EINVAL);
    uint64_t s = 99;
    for (size_t i = 0; i < size / 8; i++) {
        uint64_t r = rng_next(&s);
        memcpy(mem + i * 8, &r, 8);
    }
    ASSERT_RC(crew_queue_attach(&q, mem), CREW_EINVAL);
    assert_null(q);

    /* A real shared queue, attached a little off its start, is not found. */
    crew_queue_options o = U64_FIFO;
    o.flags = CREW_SHARED;
    ASSERT_RC(crew_queue_init(&q, mem, size, &o), 0);
    crew_queue *a = NULL;
    ASSERT_RC(crew_queue_attach(&a, mem + 64), CREW_EINVAL);
    ASSERT_RC(crew_queue_attach(&a, mem), 0);
    assert_non_null(a);
    ASSERT_RC(crew_queue_destroy(q), 0);
    free(mem);
}

/* ======================================================== processes */

/* A mapping shared with forked children: a header page, then queues. */
#define HDR 4096

typedef struct xhdr {
    _Atomic int stage;
    _Atomic uint64_t progress;
    uint64_t n;
    int kind;
    uintptr_t parent_addr;
    char name[64];
    size_t qsize;
} xhdr;

static crew_queue *hdr_queue(xhdr *h, int i) {
    crew_queue *q = NULL;
    int rc = crew_queue_attach(&q, (char *)h + HDR + (size_t)i * round_up(h->qsize, 4096));
    return rc == 0 ? q : NULL;
}

static uint64_t xvalue(uint64_t i) { return i * 0x9e3779b97f4a7c15u + 1; }

static int child_consume(void *arg) {
    xhdr *h = arg;
    crew_queue *q = hdr_queue(h, 0);
    CHILD_CHECK(q != NULL);
    uint64_t sum = 0, want = 0;
    for (uint64_t i = 0; i < h->n; i++) {
        uint64_t v = 0;
        CHILD_RC(crew_queue_get(q, &v, LONG_WAIT), 0);
        if (h->kind == CREW_FIFO) CHILD_CHECK(v == xvalue(i));
        sum += v;
        want += xvalue(i);
        atomic_store(&h->progress, i + 1);
        CHILD_RC(crew_queue_task_done(q), 0);
    }
    CHILD_CHECK(sum == want);
    return 0;
}

static int child_produce(void *arg) {
    xhdr *h = arg;
    crew_queue *q = hdr_queue(h, 0);
    CHILD_CHECK(q != NULL);
    for (uint64_t i = 0; i < h->n; i++) {
        uint64_t v = xvalue(i);
        CHILD_RC(crew_queue_put(q, &v, LONG_WAIT), 0);
        atomic_store(&h->progress, i + 1);
    }
    return 0;
}

/* Gets h->n items that must come out in increasing order. */
static int child_get_sorted(void *arg) {
    xhdr *h = arg;
    crew_queue *q = hdr_queue(h, 0);
    CHILD_CHECK(q != NULL);
    int64_t last = INT64_MIN;
    for (uint64_t i = 0; i < h->n; i++) {
        int64_t v = 0;
        CHILD_RC(crew_queue_get(q, &v, LONG_WAIT), 0);
        CHILD_CHECK(v > last);
        last = v;
    }
    CHILD_RC(crew_queue_get(q, &last, 0), CREW_EEMPTY);
    return 0;
}

/* (a) A CREW_SHARED queue built with crew_queue_init in a MAP_SHARED mapping
 * made before fork. The parent puts and a child gets, then the other way
 * round; each side first blocks on the other (empty, then full). */
static void shared_init_processes(crew_queue_kind kind) {
    crew_queue_options o = {.item_size = sizeof(uint64_t), .capacity = 16, .kind = kind,
                            .flags = CREW_SHARED};
    size_t qsize = crew_queue_footprint(&o);
    size_t total = HDR + round_up(qsize, 4096);
    xhdr *h = shm_map(total);
    h->qsize = qsize;
    h->n = (uint64_t)test_scaled(20000);
    h->kind = kind;
    crew_queue *q;
    ASSERT_RC(crew_queue_init(&q, (char *)h + HDR, qsize, &o), 0);

    /* Parent to child; the child is asleep in get before anything is put.
     * The child task_done's each item, so the parent's join returns once
     * the child has processed everything. */
    pid_t pid = fork_child(child_consume, h);
    bool asleep = TEST_WAIT_UNTIL(task_in_futex(pid, pid), SETTLE);
    uint64_t sum = 0;
    for (uint64_t i = 0; i < h->n; i++) {
        uint64_t v = xvalue(i);
        ASSERT_RC(crew_queue_put(q, &v, LONG_WAIT), 0);
        sum += v;
    }
    ASSERT_RC(crew_queue_join(q, LONG_WAIT), 0);
    assert_int_equal(atomic_load(&h->progress), h->n);
    reap_ok(pid);
    assert_true(asleep);
    assert_true(crew_queue_empty(q));

    /* Child to parent; the child is asleep in put on a full queue first. */
    atomic_store(&h->progress, 0);
    pid = fork_child(child_produce, h);
    asleep = TEST_WAIT_UNTIL(crew_queue_full(q) && task_in_futex(pid, pid), SETTLE);
    assert_true(asleep);
    assert_int_equal(atomic_load(&h->progress), 16);
    uint64_t got_sum = 0;
    for (uint64_t i = 0; i < h->n; i++) {
        uint64_t v = 0;
        ASSERT_RC(crew_queue_get(q, &v, LONG_WAIT), 0);
        if (kind == CREW_FIFO) assert_int_equal(v, xvalue(i));
        got_sum += v;
    }
    reap_ok(pid);
    assert_int_equal(got_sum, sum);
    assert_true(crew_queue_empty(q));
    /* The parent's gets are its tasks to finish. */
    ASSERT_RC(crew_queue_join(q, 0), CREW_ETIMEDOUT);
    for (uint64_t i = 0; i < h->n; i++) ASSERT_RC(crew_queue_task_done(q), 0);
    ASSERT_RC(crew_queue_join(q, 0), 0);

    if (kind == CREW_PRIORITY) {
        /* A batch put here in descending order comes out ascending there. */
        for (int64_t i = 0; i < 16; i++) {
            int64_t v = 1000 - 7 * i;
            ASSERT_RC(crew_queue_put(q, &v, 0), 0);
        }
        h->n = 16;
        reap_ok(fork_child(child_get_sorted, h));
        assert_true(crew_queue_empty(q));
    }
    ASSERT_RC(crew_queue_destroy(q), 0);
    shm_unmap(h, total);
}

static void test_shared_init_fifo_processes(void **state) {
    (void)state;
    shared_init_processes(CREW_FIFO);
}
static void test_shared_init_priority_processes(void **state) {
    (void)state;
    shared_init_processes(CREW_PRIORITY);
}
static void test_shared_init_lifo_processes(void **state) {
    (void)state;
    shared_init_processes(CREW_LIFO);
}

/* (b) A named POSIX segment, mapped afresh by the child at two addresses
 * that differ from the parent's: crew_queue_attach finds the queues at both,
 * and requests and replies flow through them. */
static int child_named(void *arg) {
    xhdr *inherited = arg;
    char name[64];
    memcpy(name, inherited->name, sizeof name);
    size_t qsize = inherited->qsize, total = HDR + 2 * round_up(qsize, 4096);
    uintptr_t parent_addr = inherited->parent_addr;
    uint64_t n = inherited->n;

    int fd = shm_open(name, O_RDWR, 0);
    CHILD_CHECK(fd >= 0);
    char *m1 = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    char *m2 = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    CHILD_CHECK(m1 != MAP_FAILED && m2 != MAP_FAILED);
    /* The copy fork made is not used from here on. */
    CHILD_CHECK(munmap(inherited, total) == 0);
    CHILD_CHECK((uintptr_t)m1 != parent_addr && (uintptr_t)m2 != parent_addr && m1 != m2);
    xhdr *h1 = (xhdr *)m1, *h2 = (xhdr *)m2;
    atomic_store(&h1->stage, 1); /* mapped: the parent may unlink the name */

    crew_queue *req1 = hdr_queue(h1, 0), *rep1 = hdr_queue(h1, 1);
    crew_queue *req2 = hdr_queue(h2, 0), *rep2 = hdr_queue(h2, 1);
    CHILD_CHECK(req1 && rep1 && req2 && rep2);
    /* No queue at the header or in the middle of one. */
    crew_queue *x = NULL;
    CHILD_RC(crew_queue_attach(&x, m1), CREW_EINVAL);
    CHILD_RC(crew_queue_attach(&x, m2 + HDR + 64), CREW_EINVAL);
    CHILD_CHECK(crew_queue_capacity(req2) == 8 && crew_queue_capacity(rep1) == 4);

    for (uint64_t i = 0; i < n; i++) {
        uint64_t v = 0;
        /* The same queue, through either mapping. */
        CHILD_RC(crew_queue_get(i % 2 ? req1 : req2, &v, LONG_WAIT), 0);
        CHILD_CHECK(v == xvalue(i));
        v = ~v;
        CHILD_RC(crew_queue_put(i % 3 ? rep2 : rep1, &v, LONG_WAIT), 0);
        CHILD_RC(crew_queue_task_done(i % 2 ? req2 : req1), 0);
    }
    CHILD_CHECK(munmap(m1, total) == 0);
    CHILD_CHECK(munmap(m2, total) == 0);
    return 0;
}

static void test_named_segment_attach(void **state) {
    (void)state;
    crew_queue_options o = {.item_size = sizeof(uint64_t), .capacity = 8, .flags = CREW_SHARED};
    crew_queue_options o_rep = o;
    o_rep.capacity = 4;
    size_t qsize = crew_queue_footprint(&o);
    assert_true(crew_queue_footprint(&o_rep) <= qsize);
    size_t total = HDR + 2 * round_up(qsize, 4096);

    char name[64];
    static unsigned counter;
    snprintf(name, sizeof name, "/crew-test-queue-%d-%u", (int)getpid(), counter++);
    int fd = shm_open(name, O_CREAT | O_EXCL | O_RDWR, 0600);
    if (fd < 0) {
        print_error("shm_open(%s): %s\n", name, strerror(errno));
        fail();
    }
    if (ftruncate(fd, (off_t)total) != 0) {
        int e = errno;
        close(fd);
        shm_unlink(name);
        print_error("ftruncate: %s\n", strerror(e));
        fail();
    }
    char *mem = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (mem == MAP_FAILED) {
        shm_unlink(name);
        fail_msg("mmap: %s", strerror(errno));
    }
    xhdr *h = (xhdr *)mem;
    h->qsize = qsize;
    h->n = (uint64_t)test_scaled(5000);
    h->parent_addr = (uintptr_t)mem;
    memcpy(h->name, name, sizeof name);
    crew_queue *req, *rep;
    ASSERT_RC(crew_queue_init(&req, mem + HDR, qsize, &o), 0);
    ASSERT_RC(crew_queue_init(&rep, mem + HDR + round_up(qsize, 4096), qsize, &o_rep), 0);

    pid_t pid = fork_child(child_named, h);
    bool mapped = TEST_WAIT_UNTIL(atomic_load(&h->stage) == 1 || waitpid(pid, NULL, WNOHANG) != 0, SETTLE);
    assert_int_equal(shm_unlink(name), 0);
    assert_true(mapped);
    assert_int_equal(atomic_load(&h->stage), 1);

    /* Requests run ahead of replies by a window of 4, so each side blocks
     * on the other now and then. */
    const uint64_t window = 4;
    uint64_t got = 0;
    for (uint64_t i = 0; i < h->n + window; i++) {
        if (i < h->n) {
            uint64_t v = xvalue(i);
            ASSERT_RC(crew_queue_put(req, &v, LONG_WAIT), 0);
        }
        if (i >= window) {
            uint64_t v = 0;
            ASSERT_RC(crew_queue_get(rep, &v, LONG_WAIT), 0);
            assert_int_equal(v, ~xvalue(got));
            got++;
        }
    }
    assert_int_equal(got, h->n);
    ASSERT_RC(crew_queue_join(req, LONG_WAIT), 0);
    reap_ok(pid);
    assert_true(crew_queue_empty(req) && crew_queue_empty(rep));
    ASSERT_RC(crew_queue_destroy(req), 0);
    ASSERT_RC(crew_queue_destroy(rep), 0);
    assert_int_equal(munmap(mem, total), 0);
}

/* (c) crew_queue_create(CREW_SHARED): the queue is in the arena, at the same
 * address in every process forked after it was made. */
typedef struct arena_hdr {
    crew_queue *q;
    uint64_t n;
    _Atomic uint64_t progress;
} arena_hdr;

static int child_arena_produce(void *arg) {
    arena_hdr *h = arg;
    for (uint64_t i = 0; i < h->n; i++) {
        pitem it = {.key = (int64_t)(xvalue(i) % 1000), .tag = xvalue(i)};
        CHILD_RC(crew_queue_put(h->q, &it, LONG_WAIT), 0);
        atomic_store(&h->progress, i + 1);
    }
    return 0;
}

static int child_arena_consume(void *arg) {
    arena_hdr *h = arg;
    uint64_t sum = 0, want = 0;
    for (uint64_t i = 0; i < h->n; i++) {
        pitem it;
        CHILD_RC(crew_queue_get(h->q, &it, LONG_WAIT), 0);
        CHILD_CHECK(it.key == (int64_t)(it.tag % 1000));
        sum += it.tag;
        want += xvalue(i);
        CHILD_RC(crew_queue_task_done(h->q), 0);
    }
    CHILD_CHECK(sum == want);
    return 0;
}

static void arena_processes(crew_queue_kind kind) {
    arena_hdr *h = shm_map(sizeof *h);
    h->n = (uint64_t)test_scaled(20000);
    ASSERT_RC(crew_queue_create(&h->q, &(crew_queue_options){.item_size = sizeof(pitem), .capacity = 32,
                                                            .kind = kind, .flags = CREW_SHARED}),
              0);
    crew_queue *q = h->q;

    pid_t pid = fork_child(child_arena_produce, h);
    bool blocked = TEST_WAIT_UNTIL(crew_queue_full(q) && task_in_futex(pid, pid), SETTLE);
    uint64_t sum = 0, want = 0;
    for (uint64_t i = 0; i < h->n; i++) {
        pitem it;
        ASSERT_RC(crew_queue_get(q, &it, LONG_WAIT), 0);
        assert_int_equal(it.key, (int64_t)(it.tag % 1000));
        if (kind == CREW_FIFO) assert_int_equal(it.tag, xvalue(i));
        sum += it.tag;
        want += xvalue(i);
        ASSERT_RC(crew_queue_task_done(q), 0);
    }
    reap_ok(pid);
    assert_true(blocked);
    assert_int_equal(sum, want);

    pid = fork_child(child_arena_consume, h);
    blocked = TEST_WAIT_UNTIL(task_in_futex(pid, pid), SETTLE);
    for (uint64_t i = 0; i < h->n; i++) {
        pitem it = {.key = (int64_t)(xvalue(i) % 1000), .tag = xvalue(i)};
        ASSERT_RC(crew_queue_put(q, &it, LONG_WAIT), 0);
    }
    ASSERT_RC(crew_queue_join(q, LONG_WAIT), 0);
    reap_ok(pid);
    assert_true(blocked);
    assert_true(crew_queue_empty(q));
    crew_queue_free(q);
    shm_unmap(h, sizeof *h);
}

static void test_arena_fifo_processes(void **state) {
    (void)state;
    arena_processes(CREW_FIFO);
}
static void test_arena_priority_processes(void **state) {
    (void)state;
    arena_processes(CREW_PRIORITY);
}

/* ====================================================== peers that die */

/* A process killed while asleep in get takes nothing with it: the other
 * waiters and the parent go on. */
static int child_get_forever(void *arg) {
    xhdr *h = arg;
    crew_queue *q = hdr_queue(h, 0);
    CHILD_CHECK(q != NULL);
    uint64_t v = 0;
    CHILD_RC(crew_queue_get(q, &v, CREW_FOREVER), 0);
    CHILD_CHECK(v == 77);
    return 0;
}

static int child_put_forever(void *arg) {
    xhdr *h = arg;
    crew_queue *q = hdr_queue(h, 0);
    CHILD_CHECK(q != NULL);
    int64_t v = -5;
    CHILD_RC(crew_queue_put(q, &v, CREW_FOREVER), 0);
    return 0;
}

static xhdr *death_setup(crew_queue_kind kind, size_t cap, crew_queue **q, size_t *total) {
    crew_queue_options o = {.item_size = sizeof(uint64_t), .capacity = cap, .kind = kind,
                            .flags = CREW_SHARED};
    size_t qsize = crew_queue_footprint(&o);
    *total = HDR + round_up(qsize, 4096);
    xhdr *h = shm_map(*total);
    h->qsize = qsize;
    ASSERT_RC(crew_queue_init(q, (char *)h + HDR, qsize, &o), 0);
    return h;
}

static void peer_killed_in_get(crew_queue_kind kind) {
    crew_queue *q;
    size_t total;
    xhdr *h = death_setup(kind, 4, &q, &total);
    pid_t a = fork_child(child_get_forever, h);
    pid_t b = fork_child(child_get_forever, h);
    bool asleep = TEST_WAIT_UNTIL(task_in_futex(a, a) && task_in_futex(b, b), SETTLE);
    kill_and_reap(a);
    /* The survivor gets the next item. */
    uint64_t v = 77;
    ASSERT_RC(crew_queue_put(q, &v, LONG_WAIT), 0);
    reap_ok(b);
    assert_true(asleep);
    assert_true(crew_queue_empty(q));
    /* And the parent uses the queue as before. */
    for (uint64_t i = 0; i < 4; i++) put_ok(q, 10 + i);
    assert_true(crew_queue_full(q));
    for (uint64_t i = 0; i < 4; i++) assert_int_equal(get_ok(q), 10 + i);
    ASSERT_RC(crew_queue_get(q, &v, SHORT), CREW_ETIMEDOUT);

    /* A process killed asleep in put on a full queue, likewise. */
    for (uint64_t i = 0; i < 4; i++) put_ok(q, 20 + i);
    a = fork_child(child_put_forever, h);
    asleep = TEST_WAIT_UNTIL(task_in_futex(a, a), SETTLE);
    kill_and_reap(a);
    assert_true(asleep);
    assert_int_equal(crew_queue_size(q), 4);
    for (uint64_t i = 0; i < 4; i++) assert_int_equal(get_ok(q), 20 + i);
    ASSERT_RC(crew_queue_get(q, &v, 0), CREW_EEMPTY);
    int rc = crew_queue_destroy(q); /* test_destroy_after_peer_died checks the code */
    assert_true(rc == 0 || rc == CREW_EBUSY);
    shm_unmap(h, total);
}

static void test_peer_killed_in_get_fifo(void **state) {
    (void)state;
    peer_killed_in_get(CREW_FIFO);
}
static void test_peer_killed_in_get_priority(void **state) {
    (void)state;
    peer_killed_in_get(CREW_PRIORITY);
}

/* A dead process is not a thread blocked in the queue: once the peers that
 * waited in it are gone, the survivor may destroy it. */
static void test_destroy_after_peer_died(void **state) {
    (void)state;
    crew_queue *q;
    size_t total;
    xhdr *h = death_setup(CREW_FIFO, 1, &q, &total);
    pid_t a = fork_child(child_get_forever, h);
    bool asleep = TEST_WAIT_UNTIL(task_in_futex(a, a), SETTLE);
    kill_and_reap(a);
    assert_true(asleep);
    ASSERT_RC(crew_queue_destroy(q), 0);

    ASSERT_RC(crew_queue_init(&q, (char *)h + HDR, h->qsize,
                              &(crew_queue_options){.item_size = 8, .capacity = 1, .flags = CREW_SHARED}),
              0);
    put_ok(q, 1);
    a = fork_child(child_put_forever, h);
    asleep = TEST_WAIT_UNTIL(task_in_futex(a, a), SETTLE);
    kill_and_reap(a);
    assert_true(asleep);
    ASSERT_RC(crew_queue_destroy(q), 0);
    shm_unmap(h, total);
}

/* A process that dies holding the queue's lock, in the middle of a get on a
 * priority queue (its compare function is the place: it runs with the lock
 * held, after the get has committed). A putter in another process was
 * asleep waiting for room: the room is there, and the putter must get it
 * without waiting out its own timeout. */
static _Atomic int die_in_compare;

static int cmp_maybe_die(const void *a, const void *b) {
    if (atomic_load(&die_in_compare)) raise(SIGKILL);
    int64_t x, y;
    memcpy(&x, a, 8);
    memcpy(&y, b, 8);
    return (x > y) - (x < y);
}

typedef struct die_hdr {
    crew_queue *q;
    _Atomic int rc;
    _Atomic int done;
    double elapsed;
} die_hdr;

static int child_put_timed(void *arg) {
    die_hdr *d = arg;
    int64_t v = 0;
    double t0 = test_now();
    int rc = crew_queue_put(d->q, &v, LONG_WAIT);
    d->elapsed = test_now() - t0;
    atomic_store(&d->rc, rc);
    atomic_store(&d->done, 1);
    return 0;
}

static int child_get_and_die(void *arg) {
    die_hdr *d = arg;
    int64_t v;
    atomic_store(&die_in_compare, 1);
    (void)crew_queue_get(d->q, &v, 0);
    return 3; /* not reached: the compare killed us */
}

static void test_peer_dies_holding_lock(void **state) {
    (void)state;
    die_hdr *d = shm_map(4096);
    crew_queue_options o = {.item_size = 8, .capacity = 3, .kind = CREW_PRIORITY, .compare = cmp_maybe_die,
                            .flags = CREW_SHARED};
    size_t fp = crew_queue_footprint(&o);
    void *mem = shm_map(fp);
    ASSERT_RC(crew_queue_init(&d->q, mem, fp, &o), 0);
    for (int64_t k = 1; k <= 3; k++) ASSERT_RC(crew_queue_put(d->q, &k, 0), 0);
    atomic_store(&d->rc, INT_MIN);

    pid_t putter = fork_child(child_put_timed, d);
    bool asleep = TEST_WAIT_UNTIL(task_in_futex(putter, putter), SETTLE);
    pid_t victim = fork_child(child_get_and_die, d);
    int st = reap(victim);
    assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    /* The putter's own timeout is LONG_WAIT; it must not need it. */
    bool prompt = TEST_WAIT_UNTIL(atomic_load(&d->done), LONG_WAIT / 3);
    reap_ok(putter);
    assert_true(asleep);
    if (!prompt) {
        print_error("the putter stayed asleep after the getter died having made room "
                    "(its put returned %d after %.1f s)\n",
                    atomic_load(&d->rc), d->elapsed);
        fail();
    }
    ASSERT_RC(atomic_load(&d->rc), 0);
    /* The victim's item (key 1) went with it; the rest, and the putter's. */
    const int64_t want[] = {0, 2, 3};
    for (int i = 0; i < 3; i++) {
        int64_t v = -1;
        ASSERT_RC(crew_queue_get(d->q, &v, 0), 0);
        assert_int_equal(v, want[i]);
    }
    int64_t v;
    ASSERT_RC(crew_queue_get(d->q, &v, 0), CREW_EEMPTY);
    ASSERT_RC(crew_queue_destroy(d->q), 0);
    shm_unmap(mem, fp);
    shm_unmap(d, 4096);
}

/* A process that dies inside put after its item is committed (its compare
 * function, called while the new item is sifted into the heap, is the
 * place). The item is there, whole, so it is a task like any other: join
 * waits for its task_done, and that task_done is no overflow. */
static int child_put_and_die(void *arg) {
    die_hdr *d = arg;
    int64_t v = 1;
    atomic_store(&die_in_compare, 1);
    (void)crew_queue_put(d->q, &v, 0);
    return 3; /* not reached: the compare killed us */
}

static void test_peer_dies_mid_put(void **state) {
    (void)state;
    die_hdr *d = shm_map(4096);
    crew_queue_options o = {.item_size = 8, .capacity = 4, .kind = CREW_PRIORITY, .compare = cmp_maybe_die,
                            .flags = CREW_SHARED};
    size_t fp = crew_queue_footprint(&o);
    void *mem = shm_map(fp);
    ASSERT_RC(crew_queue_init(&d->q, mem, fp, &o), 0);
    int64_t v = 5;
    ASSERT_RC(crew_queue_put(d->q, &v, 0), 0);
    int st = reap(fork_child(child_put_and_die, d));
    assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);

    /* Both items, in order: the dead process's item was committed. */
    ASSERT_RC(crew_queue_get(d->q, &v, 0), 0);
    assert_int_equal(v, 1);
    ASSERT_RC(crew_queue_get(d->q, &v, 0), 0);
    assert_int_equal(v, 5);
    ASSERT_RC(crew_queue_get(d->q, &v, 0), CREW_EEMPTY);
    assert_int_equal(crew_queue_size(d->q), 0);

    /* Two items were put, so two tasks are unfinished. */
    ASSERT_RC(crew_queue_task_done(d->q), 0);
    ASSERT_RC(crew_queue_join(d->q, 0), CREW_ETIMEDOUT);
    ASSERT_RC(crew_queue_task_done(d->q), 0);
    ASSERT_RC(crew_queue_join(d->q, 0), 0);
    ASSERT_RC(crew_queue_task_done(d->q), CREW_EOVERFLOW);
    ASSERT_RC(crew_queue_destroy(d->q), 0);
    shm_unmap(mem, fp);
    shm_unmap(d, 4096);
}

/* Processes killed at random points of a put loop and of a get loop, round
 * after round on one queue. Every item carries a self-check, so a torn item
 * shows; every item is marked where it is seen, so a lost or doubled one
 * shows; the survivor (the parent) drains what is left and the queue's size
 * must agree with what it drains. */
#define DEATH_MAXP 32768
#define DEATH_HDR (DEATH_MAXP + 4096)

typedef struct ditem {
    int64_t key;
    uint64_t seq;
    uint64_t check;
} ditem;

typedef struct death_hdr {
    _Atomic uint64_t produced;   /* puts that returned, this round */
    _Atomic uint64_t consumed;   /* gets that returned and were checked */
    uint64_t base;               /* first seq of this round */
    int kind;
    _Atomic int bad;             /* the consumer's first complaint */
    _Atomic uint8_t seen[DEATH_MAXP];
} death_hdr;

static ditem ditem_make(uint64_t seq, int kind) {
    uint64_t s = seq;
    int64_t key = kind == CREW_PRIORITY ? (int64_t)(rng_next(&s) % 9) - 4 : 0;
    return (ditem){.key = key, .seq = seq, .check = ~(seq * 0x9e3779b97f4a7c15u) ^ (uint64_t)key};
}

static bool ditem_whole(const ditem *d, int kind) {
    ditem want = ditem_make(d->seq, kind);
    return d->key == want.key && d->check == want.check;
}

static crew_queue *death_queue(death_hdr *h) {
    crew_queue *q = NULL;
    return crew_queue_attach(&q, (char *)h + DEATH_HDR) == 0 ? q : NULL;
}

static int death_producer(void *arg) {
    death_hdr *h = arg;
    crew_queue *q = death_queue(h);
    CHILD_CHECK(q != NULL);
    for (uint64_t i = 0; i < DEATH_MAXP; i++) {
        ditem it = ditem_make(h->base + i, h->kind);
        CHILD_RC(crew_queue_put(q, &it, LONG_WAIT), 0);
        atomic_store(&h->produced, i + 1);
    }
    for (;;) pause(); /* wait to be killed */
}

static int death_consumer(void *arg) {
    death_hdr *h = arg;
    crew_queue *q = death_queue(h);
    CHILD_CHECK(q != NULL);
    for (;;) {
        ditem it;
        int rc = crew_queue_get(q, &it, LONG_WAIT);
        int bad = 0;
        if (rc != 0) bad = 100 - rc;
        else if (!ditem_whole(&it, h->kind)) bad = 1;
        else if (it.seq < h->base || it.seq - h->base >= DEATH_MAXP) bad = 2;
        else if (atomic_exchange(&h->seen[it.seq - h->base], 1) != 0) bad = 3;
        if (bad) {
            int zero = 0;
            atomic_compare_exchange_strong(&h->bad, &zero, bad);
            return 1;
        }
        atomic_fetch_add(&h->consumed, 1);
    }
}

static void peer_killed_at_random(crew_queue_kind kind) {
    crew_queue_options o = {.item_size = sizeof(ditem), .capacity = 16, .kind = kind, .flags = CREW_SHARED};
    size_t qsize = crew_queue_footprint(&o);
    size_t total = DEATH_HDR + round_up(qsize, 4096);
    death_hdr *h = shm_map(total);
    crew_queue *q;
    ASSERT_RC(crew_queue_init(&q, (char *)h + DEATH_HDR, qsize, &o), 0);
    h->kind = kind;

    uint64_t seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 20);
    const char *env = getenv("CREW_TEST_SEED");
    if (env) seed = strtoull(env, NULL, 0);
    print_message("peer_killed_at_random: seed %#llx (CREW_TEST_SEED)\n", (unsigned long long)seed);
    uint64_t rng = seed;

    long rounds = test_scaled(24);
    if (rounds < 4) rounds = 4;
    for (long r = 0; r < rounds; r++) {
        h->base = (uint64_t)r * DEATH_MAXP;
        atomic_store(&h->produced, 0);
        atomic_store(&h->consumed, 0);
        for (size_t i = 0; i < DEATH_MAXP; i++) atomic_store_explicit(&h->seen[i], 0, memory_order_relaxed);
        uint64_t target = 1 + rng_next(&rng) % (DEATH_MAXP / 4);

        pid_t cons = fork_child(death_consumer, h);
        pid_t prod = fork_child(death_producer, h);
        if (r % 2 == 0) {
            /* The producer dies at a random point of its put loop; the
             * consumer must still drain everything it committed. */
            bool reached = TEST_WAIT_UNTIL(atomic_load(&h->produced) >= target, SETTLE);
            kill_and_reap(prod);
            bool drained = TEST_WAIT_UNTIL(crew_queue_size(q) == 0 && task_in_futex(cons, cons), SETTLE);
            kill_and_reap(cons);
            assert_true(reached);
            if (!drained) {
                print_error("round %ld: the consumer stayed asleep with %d item(s) queued after the "
                            "producer died: a lost wake-up (test_peer_dies_holding_lock shows it "
                            "deterministically)\n",
                            r, crew_queue_size(q));
                fail();
            }
        } else {
            /* The consumer dies at a random point of its get loop; the
             * producer fills the queue and is killed asleep in put. */
            bool reached = TEST_WAIT_UNTIL(atomic_load(&h->consumed) >= target, SETTLE);
            kill_and_reap(cons);
            bool blocked = TEST_WAIT_UNTIL(crew_queue_full(q) && task_in_futex(prod, prod), SETTLE);
            kill_and_reap(prod);
            assert_true(reached);
            assert_true(blocked);
        }
        assert_int_equal(atomic_load(&h->bad), 0);

        /* The survivor takes the lock (repairing what a death left), then
         * drains exactly the number of items the queue says it holds. */
        ASSERT_RC(crew_queue_join(q, 0), CREW_ETIMEDOUT);
        int n = crew_queue_size(q);
        assert_true(n >= 0 && n <= 16);
        ditem prev = {0, 0, 0};
        int drained = 0;
        for (;;) {
            ditem it;
            int rc = crew_queue_get(q, &it, 0);
            if (rc == CREW_EEMPTY) break;
            ASSERT_RC(rc, 0);
            if (!ditem_whole(&it, kind))
                fail_msg("round %ld: torn item (seq %llu)", r, (unsigned long long)it.seq);
            assert_true(it.seq >= h->base && it.seq - h->base < DEATH_MAXP);
            assert_int_equal(atomic_exchange(&h->seen[it.seq - h->base], 1), 0);
            if (drained > 0) {
                if (kind == CREW_FIFO) assert_int_equal(it.seq, prev.seq + 1);
                else assert_true(it.key > prev.key || (it.key == prev.key && it.seq > prev.seq));
            }
            prev = it;
            drained++;
        }
        /* A FIFO slot claimed by the killed process counts in size() until a
         * get gets past it (and finds nothing there): at most one such slot
         * per killed process. */
        if (kind == CREW_FIFO) assert_true(drained == n || drained == n - 1);
        else assert_int_equal(drained, n);
        assert_int_equal(crew_queue_size(q), 0);

        /* Conservation: every item the producer saw committed was seen,
         * except at most one taken by a consumer killed before it marked it;
         * the one being put when the producer died may be there or not;
         * nothing beyond. */
        uint64_t p = atomic_load(&h->produced), missing = 0;
        for (uint64_t i = 0; i < DEATH_MAXP; i++) {
            bool s = atomic_load_explicit(&h->seen[i], memory_order_relaxed) != 0;
            if (i < p && !s) missing++;
            if (i > p && s) fail_msg("round %ld: item %llu seen, but only %llu were put", r,
                                     (unsigned long long)i, (unsigned long long)p);
        }
        if (missing > 1)
            fail_msg("round %ld: %llu of %llu items lost", r, (unsigned long long)missing,
                     (unsigned long long)p);

        /* The parent uses it as before. */
        ditem it = ditem_make(h->base + DEATH_MAXP - 1, kind), back;
        ASSERT_RC(crew_queue_put(q, &it, 0), 0);
        ASSERT_RC(crew_queue_get(q, &back, 0), 0);
        assert_memory_equal(&it, &back, sizeof it);
    }
    int rc = crew_queue_destroy(q); /* test_destroy_after_peer_died checks the code */
    assert_true(rc == 0 || rc == CREW_EBUSY);
    shm_unmap(h, total);
}

static void test_peer_killed_at_random_fifo(void **state) {
    (void)state;
    peer_killed_at_random(CREW_FIFO);
}
static void test_peer_killed_at_random_priority(void **state) {
    (void)state;
    peer_killed_at_random(CREW_PRIORITY);
}

/* ================================================================= main */

/* Each test runs in a forked process of its own: see test_run_forked. */
int main(void) {
    const struct CMUnitTest tests[] = {
        ALL_WHERE(fifo_order),
        ALL_WHERE(lifo_order),
        ALL_WHERE(priority_default_order),
        ALL_WHERE(priority_custom_order),
        ALL_WHERE(item_sizes),
        ALL_WHERE(try_full_empty),
        ALL_WHERE(timeouts_expire),
        ALL_WHERE(blocked_get_woken_by_put),
        ALL_WHERE(blocked_put_woken_by_get),
        ALL_WHERE(threads_mpmc),
        ALL_WHERE(sizes_and_snapshots),
        ALL_WHERE(task_done_and_join),
        ALL_WHERE(shutdown_graceful),
        ALL_WHERE(shutdown_wakes_getters),
        ALL_WHERE(shutdown_wakes_putters),
        ALL_WHERE(shutdown_immediate),

        cmocka_unit_test(test_invalid_options),
        cmocka_unit_test(test_init_refusals),
        cmocka_unit_test(test_init_destroy_private),
        cmocka_unit_test(test_init_destroy_shared),
        cmocka_unit_test(test_attach_garbage),

        cmocka_unit_test(test_shared_init_fifo_processes),
        cmocka_unit_test(test_shared_init_lifo_processes),
        cmocka_unit_test(test_shared_init_priority_processes),
        cmocka_unit_test(test_named_segment_attach),
        cmocka_unit_test(test_arena_fifo_processes),
        cmocka_unit_test(test_arena_priority_processes),

        cmocka_unit_test(test_peer_killed_in_get_fifo),
        cmocka_unit_test(test_peer_killed_in_get_priority),
        cmocka_unit_test(test_destroy_after_peer_died),
        cmocka_unit_test(test_peer_dies_holding_lock),
        cmocka_unit_test(test_peer_dies_mid_put),
        cmocka_unit_test(test_peer_killed_at_random_fifo),
        cmocka_unit_test(test_peer_killed_at_random_priority),
    };
    return test_run_forked("test_queue", tests, sizeof tests / sizeof tests[0]);
}
