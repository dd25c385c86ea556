/* Stress for pool.h: millions of tiny tasks through one pool of 4 workers
 * on whatever cores there are, from every entry point at once:
 *   submit    4 outside threads submit test_scaled(2 million) tasks, each
 *             keeping 256 futures in flight; every 64th task submits two
 *             nested tasks and waits for them; one thread cancels every
 *             97th future right after submitting it; every 16th task has a
 *             callback;
 *   map       3 outside threads map test_scaled(3 million) items at once,
 *             two with chunk size 1, one with automatic chunks;
 *   for       2 outside threads run for loops over test_scaled(8 million)
 *             iterations with grain 1, then a reduce with grain 1;
 *   imap      imap_unordered over test_scaled(1 million) lazily pulled items
 *             (chunk 1, window 256) while another thread streams an ordered
 *             imap;
 *   nested    test_scaled(20000) submitted tasks, each mapping 32 items (chunk
 *             1) and running a 64-iteration for (grain 1) on the same pool;
 *   group     4 outside threads each run test_scaled(200000) tasks through
 *             task groups, a fresh group for each of 64 rounds, freed the
 *             moment its wait returns (one thread waits by polling with a
 *             1 ms timeout); every 1024th task grows a binary tree of 126
 *             more tasks in its own group, every 4096th a tree in a group of
 *             its own that it waits for (a worker's nested wait).
 *
 * Every item has an id and a bit in a board in a MAP_SHARED mapping (made
 * before the pool, so process pools can use it too). Whoever runs an item
 * sets its bit with an atomic or; a bit already set is a double. Each run
 * ends with a conservation check: every id ran exactly once (or, for the
 * cancelled ones, never), every result reached its caller with the right
 * value, and every callback ran. Work is scaled by CREW_STRESS_SCALE
 * (test_scaled). Thread bodies and tasks never call cmocka; they count
 * errors, which the tests assert are zero. Every blocking call has a long
 * timeout, so a lost wake-up becomes an error rather than a hang. Items per
 * second are printed for information, never asserted. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crew/error.h"
#include "crew/future.h"
#include "crew/pool.h"
#include "test_harness.h"

/* Every test runs once per kind listed here (those that can share a
 * MAP_SHARED mapping with their workers). */
static const crew_pool_kind kinds[] = {CREW_THREADS};

static const char *kind_name(crew_pool_kind kind) {
    switch (kind) {
    case CREW_THREADS: return "threads";
    case CREW_PROCESSES: return "processes";
    case CREW_MPI: return "mpi";
    }
    return "unknown";
}

#define KIND (*(const crew_pool_kind *)*state)
#define WORKERS 4
#define WAIT 60.0 /* per blocking call: a hang becomes an error */

/* ------------------------------------------------------------- the board */

typedef struct board {
    uint64_t n;     /* ids 0..n-1 */
    uint64_t top;   /* t_tiny: ids below this with id % 64 == 0 submit two children */
    _Atomic uint64_t ran, doubles, bad;
    _Atomic uint64_t bits[];
} board;

static size_t board_bytes(uint64_t n) { return sizeof(board) + (n + 63) / 64 * sizeof(uint64_t); }

static board *board_new(uint64_t n) {
    board *b = shm_map(board_bytes(n));
    b->n = n;
    b->top = 0;
    return b;
}

static void board_free(board *b) { shm_unmap(b, board_bytes(b->n)); }

static void mark(board *b, uint64_t id) {
    if (id >= b->n) {
        atomic_fetch_add_explicit(&b->bad, 1, memory_order_relaxed);
        return;
    }
    uint64_t bit = 1ull << (id % 64);
    uint64_t prev = atomic_fetch_or_explicit(&b->bits[id / 64], bit, memory_order_relaxed);
    if (prev & bit) atomic_fetch_add_explicit(&b->doubles, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&b->ran, 1, memory_order_relaxed);
}

static bool marked(const board *b, uint64_t id) {
    return (atomic_load_explicit(&b->bits[id / 64], memory_order_relaxed) >> (id % 64)) & 1;
}

/* Every id ran exactly once, except those in `skip` (may be NULL), which
 * never ran. */
static void board_check(board *b, const board *skip, const char *what) {
    uint64_t missing = 0, both = 0, first = UINT64_MAX;
    for (uint64_t id = 0; id < b->n; id++) {
        bool r = marked(b, id), s = skip != NULL && marked(skip, id);
        if (!r && !s && missing++ == 0) first = id;
        if (r && s) both++;
    }
    uint64_t doubles = atomic_load(&b->doubles), bad = atomic_load(&b->bad);
    if (missing || both || doubles || bad)
        fail_msg("%s: %llu ids never ran (first %llu), %llu ran although cancelled, %llu ran twice, "
                 "%llu out of range",
                 what, (unsigned long long)missing, (unsigned long long)first,
                 (unsigned long long)both, (unsigned long long)doubles, (unsigned long long)bad);
}

static uint64_t f_of(uint64_t id) { return id * 3 + 1; }

/* in: uint64 id; marks it; out: f(id). Ids below b->top with id % 64 == 0
 * also submit their two children (top + 2 * (id / 64) + 0, 1) on the same
 * pool and wait for them. */
static int t_tiny(const void *in, void *out, void *ctx) {
    board *b = ctx;
    uint64_t id;
    memcpy(&id, in, sizeof id);
    mark(b, id);
    if (id < b->top && id % 64 == 0) {
        crew_pool *p = crew_pool_current();
        if (p == NULL) return CREW_EPROTO;
        uint64_t kid[2] = {b->top + 2 * (id / 64), b->top + 2 * (id / 64) + 1};
        crew_future *fs[2] = {NULL, NULL};
        int rc = 0;
        for (int k = 0; k < 2 && rc == 0; k++) {
            crew_task t = {.fn = t_tiny, .in = &kid[k], .in_size = sizeof kid[k],
                           .out_size = sizeof(uint64_t), .ctx = b};
            rc = crew_pool_submit(p, &t, &fs[k]);
        }
        for (int k = 0; k < 2; k++) {
            if (fs[k] == NULL) continue;
            uint64_t r = 0;
            int g = crew_future_get(fs[k], &r, WAIT);
            if (g == 0 && r != f_of(kid[k])) g = CREW_EPROTO;
            if (rc == 0) rc = g;
            crew_future_free(fs[k]);
        }
        if (rc != 0) return rc;
    }
    uint64_t r = f_of(id);
    memcpy(out, &r, sizeof r);
    return 0;
}

/* Errors seen by a thread: how many, and the first (a code or a value). */
typedef struct errs {
    uint64_t n;
    int64_t first;
} errs;

static void note(errs *e, int64_t what) {
    if (e->n++ == 0) e->first = what;
}

static void check_errs(const errs *e, const char *who) {
    if (e->n != 0)
        fail_msg("%s: %llu errors, the first %lld (%s)", who, (unsigned long long)e->n,
                 (long long)e->first, crew_err_name((int)e->first));
}

static crew_pool *pool_new(crew_pool_kind kind) {
    crew_pool_options o = {.kind = kind, .workers = WORKERS};
    crew_pool *p = NULL;
    ASSERT_RC(crew_pool_create(&p, &o), 0);
    return p;
}

static void pool_end(crew_pool *p) {
    ASSERT_RC(crew_pool_close(p), 0);
    ASSERT_RC(crew_pool_join(p, WAIT), 0);
    crew_pool_free(p);
}

static void report(const char *what, uint64_t items, double dt) {
    printf("  %-34s %9llu items in %6.2f s: %6.2f M items/s\n", what, (unsigned long long)items, dt,
           (double)items / dt / 1e6);
    fflush(stdout);
}

/* ---------------------------------------------------------------- submit */

#define SUBMITTERS 4
#define IN_FLIGHT 256

typedef struct submitter {
    pthread_t th;
    int id;
    crew_pool *pool;
    board *b, *cancelled;
    uint64_t first, count;
    errs e;
    uint64_t attached;         /* callbacks that must run */
    _Atomic uint64_t cb_seen, cb_bad;
    uint64_t cancels;
} submitter;

static void cb_count(const void *result, void *arg) {
    submitter *s = arg;
    uint64_t r;
    memcpy(&r, result, sizeof r);
    if (r % 3 != 1) atomic_fetch_add(&s->cb_bad, 1);
    atomic_fetch_add(&s->cb_seen, 1);
}

static void retire(submitter *s, crew_future *f, uint64_t id) {
    uint64_t r = 0;
    int rc = crew_future_get(f, &r, WAIT);
    if (rc == CREW_ECANCELED && marked(s->cancelled, id)) {
        /* cancelled by us */
    } else if (rc != 0) {
        note(&s->e, rc);
    } else if (r != f_of(id)) {
        note(&s->e, (int64_t)r);
    }
    crew_future_free(f);
}

static void *submitter_main(void *arg) {
    submitter *s = arg;
    crew_future *ring[IN_FLIGHT];
    uint64_t ids[IN_FLIGHT];
    size_t head = 0, held = 0;
    for (uint64_t id = s->first; id < s->first + s->count; id++) {
        crew_task t = {.fn = t_tiny, .in = &id, .in_size = sizeof id, .out_size = sizeof(uint64_t),
                       .ctx = s->b};
        if (id % 16 == 0) {
            t.callback = cb_count;
            t.callback_arg = s;
        }
        crew_future *f = NULL;
        int rc = crew_pool_submit(s->pool, &t, &f);
        if (rc != 0) {
            note(&s->e, rc);
            break;
        }
        if (id % 16 == 0) s->attached++;
        if (s->id == 0 && id % 97 == 0 && crew_future_cancel(f) == 0) {
            mark(s->cancelled, id);
            if (id % 64 == 0 && id < s->b->top) { /* its children never come */
                mark(s->cancelled, s->b->top + 2 * (id / 64));
                mark(s->cancelled, s->b->top + 2 * (id / 64) + 1);
            }
            if (id % 16 == 0) s->attached--;
            s->cancels++;
        }
        if (held == IN_FLIGHT) { /* retire the oldest, put this one in its place */
            retire(s, ring[head], ids[head]);
            ring[head] = f;
            ids[head] = id;
            head = (head + 1) % IN_FLIGHT;
        } else {
            ring[(head + held) % IN_FLIGHT] = f;
            ids[(head + held) % IN_FLIGHT] = id;
            held++;
        }
    }
    while (held > 0) {
        retire(s, ring[head], ids[head]);
        head = (head + 1) % IN_FLIGHT;
        held--;
    }
    return NULL;
}

static void stress_submit(void **state) {
    uint64_t top = (uint64_t)test_scaled(2000000);
    uint64_t n = top + 2 * ((top + 63) / 64);
    board *b = board_new(n), *cancelled = board_new(n);
    b->top = top;
    crew_pool *p = pool_new(KIND);
    submitter *s = calloc(SUBMITTERS, sizeof *s);
    assert_non_null(s);
    double t0 = test_now();
    uint64_t per = top / SUBMITTERS;
    for (int k = 0; k < SUBMITTERS; k++) {
        s[k].id = k;
        s[k].pool = p;
        s[k].b = b;
        s[k].cancelled = cancelled;
        s[k].first = per * (uint64_t)k;
        s[k].count = k == SUBMITTERS - 1 ? top - per * (uint64_t)k : per;
        th_start(&s[k].th, submitter_main, &s[k]);
    }
    uint64_t cancels = 0;
    for (int k = 0; k < SUBMITTERS; k++) {
        th_join(s[k].th);
        cancels += s[k].cancels;
    }
    double dt = test_now() - t0;
    pool_end(p);
    for (int k = 0; k < SUBMITTERS; k++) {
        char who[32];
        snprintf(who, sizeof who, "submitter %d", k);
        check_errs(&s[k].e, who);
        if (atomic_load(&s[k].cb_seen) != s[k].attached || atomic_load(&s[k].cb_bad) != 0)
            fail_msg("%s: %llu callbacks ran (%llu wrong), %llu expected", who,
                     (unsigned long long)atomic_load(&s[k].cb_seen),
                     (unsigned long long)atomic_load(&s[k].cb_bad),
                     (unsigned long long)s[k].attached);
    }
    board_check(b, cancelled, "submit");
    report("submit, 4 threads + nested", n, dt);
    printf("  (%llu cancelled before they started)\n", (unsigned long long)cancels);
    free(s);
    board_free(b);
    board_free(cancelled);
}

/* ------------------------------------------------------------------- map */

typedef struct mapper {
    pthread_t th;
    crew_pool *pool;
    board *b;
    uint64_t first, count;
    size_t chunk;
    int rc;
    errs e;
} mapper;

static void *mapper_main(void *arg) {
    mapper *m = arg;
    uint64_t *in = malloc(m->count * sizeof *in), *out = malloc(m->count * sizeof *out);
    if (in == NULL || out == NULL) {
        m->rc = CREW_ENOMEM;
        free(in);
        free(out);
        return NULL;
    }
    for (uint64_t i = 0; i < m->count; i++) {
        in[i] = m->first + i;
        out[i] = 0;
    }
    crew_map map = {.fn = t_tiny, .in = in, .in_size = sizeof *in, .out = out,
                    .out_size = sizeof *out, .count = m->count, .ctx = m->b,
                    .chunk_size = m->chunk};
    m->rc = crew_pool_map(m->pool, &map);
    for (uint64_t i = 0; i < m->count; i++)
        if (out[i] != f_of(in[i])) note(&m->e, (int64_t)i);
    free(in);
    free(out);
    return NULL;
}

static void stress_map(void **state) {
    uint64_t n = (uint64_t)test_scaled(3000000);
    board *b = board_new(n);
    crew_pool *p = pool_new(KIND);
    mapper m[3];
    memset(m, 0, sizeof m);
    const size_t chunks[3] = {1, 1, 0};
    double t0 = test_now();
    for (int k = 0; k < 3; k++) {
        m[k].pool = p;
        m[k].b = b;
        m[k].first = n / 3 * (uint64_t)k;
        m[k].count = k == 2 ? n - n / 3 * 2 : n / 3;
        m[k].chunk = chunks[k];
        m[k].rc = 12345;
        th_start(&m[k].th, mapper_main, &m[k]);
    }
    for (int k = 0; k < 3; k++) th_join(m[k].th);
    double dt = test_now() - t0;
    pool_end(p);
    for (int k = 0; k < 3; k++) {
        ASSERT_RC(m[k].rc, 0);
        check_errs(&m[k].e, "map outputs");
    }
    board_check(b, NULL, "map");
    report("map, 3 threads, chunks 1, 1, auto", n, dt);
    board_free(b);
}

/* ------------------------------------------------------------ for, reduce */

static int b_mark(size_t b, size_t e, void *ctx) {
    for (size_t i = b; i < e; i++) mark(ctx, i);
    return 0;
}

typedef struct looper {
    pthread_t th;
    crew_pool *pool;
    board *b;
    uint64_t first, count;
    int rc;
} looper;

static void *looper_main(void *arg) {
    looper *l = arg;
    crew_for loop = {.begin = l->first, .end = l->first + l->count, .body = b_mark, .ctx = l->b,
                     .grain = 1};
    l->rc = crew_pool_for(l->pool, &loop);
    return NULL;
}

static int r_sum(size_t b, size_t e, void *acc, void *ctx) {
    (void)ctx;
    uint64_t s;
    memcpy(&s, acc, sizeof s);
    for (size_t i = b; i < e; i++) s += i;
    memcpy(acc, &s, sizeof s);
    return 0;
}

static void c_sum(void *acc, const void *other, void *ctx) {
    (void)ctx;
    uint64_t a, o;
    memcpy(&a, acc, sizeof a);
    memcpy(&o, other, sizeof o);
    a += o;
    memcpy(acc, &a, sizeof a);
}

static void stress_for(void **state) {
    uint64_t n = (uint64_t)test_scaled(8000000);
    board *b = board_new(n);
    crew_pool *p = pool_new(KIND);
    looper l[2];
    memset(l, 0, sizeof l);
    double t0 = test_now();
    for (int k = 0; k < 2; k++) {
        l[k].pool = p;
        l[k].b = b;
        l[k].first = n / 2 * (uint64_t)k;
        l[k].count = k == 1 ? n - n / 2 : n / 2;
        l[k].rc = 12345;
        th_start(&l[k].th, looper_main, &l[k]);
    }
    for (int k = 0; k < 2; k++) th_join(l[k].th);
    double dt = test_now() - t0;
    for (int k = 0; k < 2; k++) ASSERT_RC(l[k].rc, 0);
    board_check(b, NULL, "for");
    report("for, 2 threads, grain 1", n, dt);

    static const uint64_t zero = 0;
    uint64_t sum = 1;
    crew_reduce r = {.begin = 0, .end = n, .body = r_sum, .combine = c_sum, .identity = &zero,
                     .size = sizeof sum, .result = &sum, .grain = 1};
    t0 = test_now();
    ASSERT_RC(crew_pool_reduce(p, &r), 0);
    dt = test_now() - t0;
    assert_int_equal(sum, n * (n - 1) / 2);
    report("reduce, grain 1", n, dt);
    pool_end(p);
    board_free(b);
}

/* ------------------------------------------------------------------ imap */

typedef struct feeder {
    uint64_t n, taken;
} feeder;

static int feed(void *item, size_t index, void *arg) {
    feeder *f = arg;
    if (index >= f->n) return 0;
    uint64_t id = index;
    memcpy(item, &id, sizeof id);
    f->taken++;
    return 1;
}

typedef struct streamer {
    pthread_t th;
    crew_pool *pool;
    board *b;
    uint64_t first, count;
    int rc;
    errs e;
} streamer;

/* An ordered imap over an array, checking order and values. */
static void *streamer_main(void *arg) {
    streamer *s = arg;
    uint64_t *in = malloc(s->count * sizeof *in);
    if (in == NULL) {
        s->rc = CREW_ENOMEM;
        return NULL;
    }
    for (uint64_t i = 0; i < s->count; i++) in[i] = s->first + i;
    crew_imap im = {.fn = t_tiny, .ctx = s->b, .in = in, .count = s->count, .in_size = sizeof *in,
                    .out_size = sizeof(uint64_t), .chunk_size = 1};
    crew_imap_iter *it = NULL;
    s->rc = crew_pool_imap(s->pool, &im, &it);
    if (s->rc == 0) {
        for (uint64_t k = 0;; k++) {
            uint64_t r = 0;
            size_t idx = SIZE_MAX;
            int rc = crew_imap_next(it, &r, &idx, WAIT);
            if (rc == CREW_EOF) {
                if (k != s->count) note(&s->e, (int64_t)k);
                break;
            }
            if (rc != 0) {
                note(&s->e, rc);
                break;
            }
            if (idx != k || r != f_of(in[k])) note(&s->e, (int64_t)k);
        }
        crew_imap_free(it);
    }
    free(in);
    return NULL;
}

static void stress_imap(void **state) {
    uint64_t n = (uint64_t)test_scaled(1000000), n2 = n / 4;
    board *b = board_new(n + n2);
    crew_pool *p = pool_new(KIND);
    streamer s = {.pool = p, .b = b, .first = n, .count = n2, .rc = 12345};
    double t0 = test_now();
    th_start(&s.th, streamer_main, &s);

    feeder fd = {.n = n};
    crew_imap im = {.fn = t_tiny, .ctx = b, .input = feed, .input_arg = &fd,
                    .in_size = sizeof(uint64_t), .out_size = sizeof(uint64_t), .unordered = true,
                    .chunk_size = 1, .window = 256};
    crew_imap_iter *it = NULL;
    ASSERT_RC(crew_pool_imap(p, &im, &it), 0);
    unsigned char *seen = calloc(n, 1);
    assert_non_null(seen);
    errs e = {0};
    uint64_t got = 0;
    for (;;) {
        uint64_t r = 0;
        size_t idx = SIZE_MAX;
        int rc = crew_imap_next(it, &r, &idx, WAIT);
        if (rc == CREW_EOF) break;
        if (rc != 0) {
            note(&e, rc);
            break;
        }
        if (idx >= n || seen[idx]++ != 0 || r != f_of(idx)) note(&e, (int64_t)idx);
        got++;
    }
    crew_imap_free(it);
    th_join(s.th);
    double dt = test_now() - t0;
    free(seen);
    check_errs(&e, "imap_unordered");
    assert_int_equal(got, n);
    assert_int_equal(fd.taken, n);
    ASSERT_RC(s.rc, 0);
    check_errs(&s.e, "ordered imap");
    pool_end(p);
    board_check(b, NULL, "imap");
    report("imap unordered lazy + ordered", n + n2, dt);
    board_free(b);
}

/* ---------------------------------------------------------------- nested */

#define NEST_MAP 32
#define NEST_FOR 64

typedef struct nest_ctx {
    board *b;        /* map ids [0, tasks * NEST_MAP), then for ids */
    uint64_t tasks;
} nest_ctx;

/* in: uint64 task number t. A map over its 32 ids (chunk 1) and a for over
 * its 64 ids (grain 1), both on the same pool. out: t. */
static int t_nest(const void *in, void *out, void *ctx) {
    nest_ctx *c = ctx;
    uint64_t t;
    memcpy(&t, in, sizeof t);
    crew_pool *p = crew_pool_current();
    if (p == NULL) return CREW_EPROTO;
    uint64_t ids[NEST_MAP], outs[NEST_MAP];
    for (uint64_t j = 0; j < NEST_MAP; j++) ids[j] = t * NEST_MAP + j;
    crew_map m = {.fn = t_tiny, .in = ids, .in_size = sizeof *ids, .out = outs,
                  .out_size = sizeof *outs, .count = NEST_MAP, .ctx = c->b, .chunk_size = 1};
    int rc = crew_pool_map(p, &m);
    if (rc != 0) return rc;
    for (uint64_t j = 0; j < NEST_MAP; j++)
        if (outs[j] != f_of(ids[j])) return CREW_EPROTO;
    uint64_t base = c->tasks * NEST_MAP + t * NEST_FOR;
    crew_for l = {.begin = base, .end = base + NEST_FOR, .body = b_mark, .ctx = c->b, .grain = 1};
    rc = crew_pool_for(p, &l);
    if (rc != 0) return rc;
    memcpy(out, &t, sizeof t);
    return 0;
}

static void stress_nested(void **state) {
    uint64_t tasks = (uint64_t)test_scaled(20000);
    uint64_t n = tasks * (NEST_MAP + NEST_FOR);
    board *b = board_new(n);
    nest_ctx *c = shm_map(sizeof *c);
    c->b = b;
    c->tasks = tasks;
    crew_pool *p = pool_new(KIND);
    crew_future *ring[IN_FLIGHT];
    uint64_t ids[IN_FLIGHT];
    size_t held = 0, head = 0;
    errs e = {0};
    double t0 = test_now();
    for (uint64_t t = 0; t < tasks; t++) {
        crew_task task = {.fn = t_nest, .in = &t, .in_size = sizeof t, .out_size = sizeof t,
                          .ctx = c};
        crew_future *f = NULL;
        ASSERT_RC(crew_pool_submit(p, &task, &f), 0);
        if (held == IN_FLIGHT) {
            uint64_t r = 0;
            int rc = crew_future_get(ring[head], &r, WAIT);
            if (rc != 0) note(&e, rc);
            else if (r != ids[head]) note(&e, (int64_t)r);
            crew_future_free(ring[head]);
            ring[head] = f;
            ids[head] = t;
            head = (head + 1) % IN_FLIGHT;
        } else {
            ring[held] = f;
            ids[held] = t;
            held++;
        }
    }
    for (size_t k = 0; k < held; k++) {
        size_t i = (head + k) % IN_FLIGHT;
        uint64_t r = 0;
        int rc = crew_future_get(ring[i], &r, WAIT);
        if (rc != 0) note(&e, rc);
        else if (r != ids[i]) note(&e, (int64_t)r);
        crew_future_free(ring[i]);
    }
    double dt = test_now() - t0;
    pool_end(p);
    check_errs(&e, "nested");
    board_check(b, NULL, "nested");
    report("nested: task -> map + for", n, dt);
    shm_unmap(c, sizeof *c);
    board_free(b);
}

/* ----------------------------------------------------------------- group */

#define GROUPERS 4
#define GROUP_ROUNDS 64
#define TREE_EVERY 1024  /* a task with id % TREE_EVERY == 0 grows a tree in its group */
#define INNER_EVERY 4096 /* one with id % INNER_EVERY == INNER_EVERY / 2 a tree in its own */
#define TREE_DEPTH 6     /* heap indices 1 (the task itself) .. 2^(TREE_DEPTH+1) - 1 */
#define TREE_END (2u << TREE_DEPTH)
#define TREE_IDS ((uint64_t)TREE_END - 2) /* nodes below a root, with ids of their own */

_Static_assert(sizeof(uintptr_t) >= 8, "a task's argument packs 56 bits");

typedef struct grouper {
    pthread_t th;
    int id;
    crew_pool *pool;
    uint64_t first, count; /* its flat ids */
    crew_group *g;         /* the round's group; its tasks read it */
    errs e;
    uint64_t timeouts;     /* grouper 0: waits that timed out */
} grouper;

/* What the group tasks find (threads only: a group is this process's). Ids:
 * [0, flat) the flat tasks, then TREE_IDS per tree, then per inner tree. */
static struct {
    board *b;
    uint64_t tree_base, inner_base;
    grouper *groupers;
} gs;

/* A task's argument: grouper k, heap index j (1: a flat task), flat id. */
static void *genc(unsigned k, unsigned j, uint64_t flat) {
    return (void *)(uintptr_t)(((uint64_t)k << 48) | ((uint64_t)j << 40) | flat);
}

/* A node of an inner tree: its group, the ids of its tree, its heap index,
 * and the tree's nodes (on the stack of the task that waits for them). */
typedef struct inner_node {
    crew_group *g;
    uint64_t base;
    unsigned j;
    struct inner_node *nodes;
} inner_node;

static int g_inner_node(void *arg) {
    inner_node *n = arg;
    mark(gs.b, n->base + n->j - 2);
    for (unsigned c = 2 * n->j; c < TREE_END && c <= 2 * n->j + 1; c++) {
        int rc = crew_group_run(n->g, g_inner_node, &n->nodes[c]);
        if (rc != 0) return rc;
    }
    return 0;
}

/* Flat task `flat` grows a tree in a group of its own and waits for it. */
static int inner_tree(uint64_t flat) {
    crew_pool *p = crew_pool_current();
    if (p == NULL) return CREW_EPROTO;
    crew_group *g = NULL;
    int rc = crew_group_create(&g, p);
    if (rc != 0) return rc;
    inner_node nodes[TREE_END];
    for (unsigned j = 0; j < TREE_END; j++)
        nodes[j] = (inner_node){g, gs.inner_base + flat / INNER_EVERY * TREE_IDS, j, nodes};
    for (unsigned c = 2; c <= 3 && rc == 0; c++) rc = crew_group_run(g, g_inner_node, &nodes[c]);
    int w = crew_group_wait(g, WAIT);
    if (w == CREW_ETIMEDOUT) return w; /* its tasks may still use g and nodes: leak, fail */
    crew_group_free(g);
    return rc != 0 ? rc : w;
}

/* A flat task (j 1) or a node of a tree in the grouper's group. */
static int g_stress(void *arg) {
    uint64_t a = (uintptr_t)arg;
    unsigned k = (unsigned)(a >> 48) & 0xff, j = (unsigned)(a >> 40) & 0xff;
    uint64_t flat = a & ((1ull << 40) - 1);
    if (j == 1) {
        mark(gs.b, flat);
        if (flat % INNER_EVERY == INNER_EVERY / 2) {
            int rc = inner_tree(flat);
            if (rc != 0) return rc;
        }
        if (flat % TREE_EVERY != 0) return 0;
    } else {
        mark(gs.b, gs.tree_base + flat / TREE_EVERY * TREE_IDS + j - 2);
    }
    crew_group *g = gs.groupers[k].g;
    for (unsigned c = 2 * j; c < TREE_END && c <= 2 * j + 1; c++) {
        int rc = crew_group_run(g, g_stress, genc(k, c, flat));
        if (rc != 0) return rc;
    }
    return 0;
}

static void *grouper_main(void *arg) {
    grouper *s = arg;
    for (uint64_t r = 0; r < GROUP_ROUNDS; r++) {
        uint64_t lo = s->first + s->count * r / GROUP_ROUNDS;
        uint64_t hi = s->first + s->count * (r + 1) / GROUP_ROUNDS;
        crew_group *g = NULL;
        int rc = crew_group_create(&g, s->pool);
        if (rc != 0) {
            note(&s->e, rc);
            return NULL;
        }
        s->g = g;
        for (uint64_t id = lo; id < hi && rc == 0; id++)
            rc = crew_group_run(g, g_stress, genc((unsigned)s->id, 1, id));
        if (rc != 0) note(&s->e, rc);
        if (s->id == 0) { /* sets and finds the waiter bit many times */
            double end = test_now() + WAIT;
            while ((rc = crew_group_wait(g, 0.001)) == CREW_ETIMEDOUT && test_now() < end)
                s->timeouts++;
        } else {
            rc = crew_group_wait(g, WAIT);
        }
        if (rc != 0) {
            note(&s->e, rc);
            if (rc == CREW_ETIMEDOUT) return NULL; /* its tasks may still use g: leak it */
        }
        crew_group_free(g); /* at once: the last task's wake-up must not touch it */
    }
    return NULL;
}

static void stress_group(void **state) {
    uint64_t flat = (uint64_t)test_scaled(GROUPERS * 200000L);
    uint64_t trees = (flat + TREE_EVERY - 1) / TREE_EVERY;
    uint64_t inners = (flat + INNER_EVERY / 2 - 1) / INNER_EVERY;
    uint64_t n = flat + (trees + inners) * TREE_IDS;
    board *b = board_new(n);
    grouper *s = calloc(GROUPERS, sizeof *s);
    assert_non_null(s);
    gs.b = b;
    gs.tree_base = flat;
    gs.inner_base = flat + trees * TREE_IDS;
    gs.groupers = s;
    crew_pool *p = pool_new(KIND);
    double t0 = test_now();
    uint64_t per = flat / GROUPERS;
    for (int k = 0; k < GROUPERS; k++) {
        s[k].id = k;
        s[k].pool = p;
        s[k].first = per * (uint64_t)k;
        s[k].count = k == GROUPERS - 1 ? flat - per * (uint64_t)k : per;
        th_start(&s[k].th, grouper_main, &s[k]);
    }
    for (int k = 0; k < GROUPERS; k++) th_join(s[k].th);
    double dt = test_now() - t0;
    pool_end(p);
    for (int k = 0; k < GROUPERS; k++) {
        char who[32];
        snprintf(who, sizeof who, "grouper %d", k);
        check_errs(&s[k].e, who);
    }
    board_check(b, NULL, "group");
    assert_int_equal(atomic_load(&b->ran), n);
    report("group, 4 threads + trees", n, dt);
    printf("  (%llu waits of 1 ms timed out)\n", (unsigned long long)s[0].timeouts);
    free(s);
    board_free(b);
}

/* ------------------------------------------------------------------ main */

typedef struct stress_test {
    const char *name;
    CMUnitTestFunction fn;
} stress_test;

static const stress_test suite[] = {
    {"submit", stress_submit}, {"map", stress_map},       {"for", stress_for},
    {"imap", stress_imap},     {"nested", stress_nested}, {"group", stress_group},
};

int main(void) {
    const size_t nk = sizeof kinds / sizeof kinds[0], ns = sizeof suite / sizeof suite[0];
    struct CMUnitTest tests[sizeof kinds / sizeof kinds[0] * sizeof suite / sizeof suite[0]];
    char *names[sizeof tests / sizeof tests[0]];
    size_t n = 0;
    for (size_t k = 0; k < nk; k++)
        for (size_t s = 0; s < ns; s++) {
            if (asprintf(&names[n], "%s:stress_%s", kind_name(kinds[k]), suite[s].name) < 0) return 1;
            tests[n] = (struct CMUnitTest){.name = names[n], .test_func = suite[s].fn,
                                           .initial_state = (void *)(uintptr_t)&kinds[k]};
            n++;
        }
    printf("stress scale %.2f, %d workers\n", test_scale(), WORKERS);
    const char *filter = getenv("CREW_TEST_FILTER"); /* a glob over the names */
    if (filter != NULL && *filter != '\0') cmocka_set_test_filter(filter);
    int rc = _cmocka_run_group_tests("stress_pool", tests, n, NULL, NULL);
    for (size_t i = 0; i < n; i++) free(names[i]);
    return rc;
}
