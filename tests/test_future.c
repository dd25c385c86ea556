/* Unit tests for the future module: creation and reference counting, the
 * state machine (PENDING -> RUNNING -> FINISHED, PENDING -> CANCELLED) and its
 * refusals, get with results, error codes, cancellation and timeouts, waking
 * one and many blocked waiters, done callbacks (order, once, thread, at once
 * on a completed future), crew_future_wait in its three modes, the
 * as_completed iterator, and a stress run where eight threads complete many
 * futures while others wait, iterate, cancel and add callbacks.
 *
 * The cases follow CPython's Lib/test/test_concurrent_futures where their
 * behaviour applies to C, plus crew's contract from future.h.
 *
 * Helper threads are plain pthreads, or crew threads where a test checks
 * which thread ran a callback. They never call cmocka's assertions; they
 * record what happened and the main thread checks it after joining them.
 * Each test runs in a process of its own (see main). Nothing sleeps to wait
 * for another thread: where a test needs a helper asleep inside a call it
 * watches the helper's kernel state in /proc until it sleeps in futex(), and
 * helpers that must act in a given order wait on crew_events the main thread
 * sets. Lifetimes (references held by the iterator, by waiters, by a
 * completing thread) are proved by the ASan build: a premature free is a
 * use-after-free report, a missing one a leak report. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crew/clock.h"
#include "crew/error.h"
#include "crew/future.h"
#include "crew/sync.h"
#include "crew/thread.h"

/* How long one test process may run before the runner kills it: well below
 * CTest's limit for the whole program, so a hang is reported by name. */
#define TEST_PROCESS_LIMIT 60.0
#include "test_harness.h"

/* A call that must return at once (a completed future, EOF) gets this long
 * on a loaded machine under sanitizers. */
#define PROMPT 5.0

/* A 24-byte result with fields of several kinds, so a partial copy shows. */
typedef struct triple {
    uint64_t a;
    double b;
    int32_t c;
    uint32_t d;
} triple;
_Static_assert(sizeof(triple) == 24, "triple is 24 bytes");

static triple triple_of(long i) {
    return (triple){.a = 0x0102030405060708ull ^ (uint64_t)i,
                    .b = (double)i * 0.5 + 0.25,
                    .c = (int32_t)(-i - 1),
                    .d = ~(uint32_t)i};
}

static bool triple_eq(const triple *x, const triple *y) {
    return x->a == y->a && x->b == y->b && x->c == y->c && x->d == y->d;
}

#define ASSERT_TRIPLE(got, want)                                                \
    do {                                                                        \
        triple g_ = (got), w_ = (want);                                         \
        if (!triple_eq(&g_, &w_)) {                                             \
            print_error("result {%llx, %g, %d, %x}, expected {%llx, %g, %d, %x}\n", \
                        (unsigned long long)g_.a, g_.b, (int)g_.c, (unsigned)g_.d, \
                        (unsigned long long)w_.a, w_.b, (int)w_.c, (unsigned)w_.d); \
            fail();                                                             \
        }                                                                       \
    } while (0)

static crew_future *new_future(size_t result_size) {
    crew_future *f = NULL;
    ASSERT_RC(crew_future_create(&f, result_size), 0);
    assert_non_null(f);
    return f;
}

static void finish_with(crew_future *f, long i) {
    triple t = triple_of(i);
    ASSERT_RC(crew_future_set_running(f), 0);
    ASSERT_RC(crew_future_set_result(f, &t), 0);
}

static void assert_pending(const crew_future *f) {
    assert_false(crew_future_done(f));
    assert_false(crew_future_running(f));
    assert_false(crew_future_cancelled(f));
}

/* ------------------------------------------------------- helper threads */

/* A helper thread making one blocking call. */
typedef struct helper helper;
typedef int (*helper_op)(helper *h);
struct helper {
    pthread_t th;
    helper_op op;
    crew_future *f;             /* get */
    crew_future *const *fs;     /* wait, iter */
    size_t n;
    crew_future_wait_mode mode;
    double timeout;
    triple got;                 /* get: the result */
    size_t order[16];           /* iter: the indices in the order seen */
    size_t seen;
    int rc_end;                 /* iter: what the call after the last gave */
    _Atomic int tid;            /* set before the call */
    _Atomic bool done;          /* set after it */
    int rc;                     /* its result; read after the join */
    double elapsed;
};

static void *helper_main(void *arg) {
    helper *h = arg;
    atomic_store(&h->tid, my_tid());
    double t0 = test_now();
    h->rc = h->op(h);
    h->elapsed = test_now() - t0;
    atomic_store(&h->done, true);
    return NULL;
}

static void helper_start(helper *h, helper_op op) {
    h->op = op;
    atomic_init(&h->tid, 0);
    atomic_init(&h->done, false);
    h->rc = 12345;
    th_start(&h->th, helper_main, h);
}

static int op_get(helper *h) {
    memset(&h->got, 0, sizeof h->got);
    return crew_future_get(h->f, &h->got, h->timeout);
}

static int op_wait(helper *h) {
    return crew_future_wait(h->fs, h->n, h->mode, h->timeout);
}

/* Iterate to the end: rc is the first failure of next (or 0), rc_end what
 * the call after the last index gave. */
static int op_iter(helper *h) {
    crew_future_iter *it = NULL;
    int rc = crew_future_iter_start(&it, h->fs, h->n);
    if (rc != 0) return rc;
    h->seen = 0;
    for (size_t k = 0; k < h->n; k++) {
        size_t idx = SIZE_MAX;
        rc = crew_future_iter_next(it, &idx, h->timeout);
        if (rc != 0) break;
        if (h->seen < 16) h->order[h->seen] = idx;
        h->seen++;
    }
    if (rc == 0) {
        size_t idx = SIZE_MAX;
        h->rc_end = crew_future_iter_next(it, &idx, h->timeout);
    }
    crew_future_iter_free(it);
    return rc;
}

/* The helper is asleep in the call (not returned, not spinning). */
static void assert_blocked(helper *h) {
    if (thread_blocked(&h->tid, &h->done, SETTLE)) return;
    if (atomic_load(&h->done)) /* rc is written before done */
        fail_msg("the helper returned %d (%s) instead of blocking", h->rc, crew_err_name(h->rc));
    fail_msg("the helper never slept in the call");
}

/* A thread that completes futures one step at a time: step k waits for
 * go[k], then applies action[k] to fs[index[k]] and records the code. */
enum { ACT_RESULT, ACT_ERROR, ACT_CANCEL, ACT_FAIL };
#define MAX_STEPS 16
typedef struct stepper {
    pthread_t th;
    crew_future **fs;
    size_t steps;
    size_t index[MAX_STEPS];
    int action[MAX_STEPS];
    crew_event go[MAX_STEPS];
    int rc[MAX_STEPS];
    _Atomic size_t finished;    /* steps done */
} stepper;

static int apply(crew_future *f, int action, long value) {
    switch (action) {
    case ACT_RESULT: {
        triple t = triple_of(value);
        int rc = crew_future_set_running(f);
        return rc != 0 ? rc : crew_future_set_result(f, &t);
    }
    case ACT_ERROR: {
        int rc = crew_future_set_running(f);
        return rc != 0 ? rc : crew_future_set_error(f, CREW_EPIPE);
    }
    case ACT_CANCEL:
        return crew_future_cancel(f);
    default: /* ACT_FAIL: an error without set_running (already running) */
        return crew_future_set_error(f, CREW_ECONNRESET);
    }
}

static void *stepper_main(void *arg) {
    stepper *s = arg;
    for (size_t k = 0; k < s->steps; k++) {
        int rc = crew_event_wait(&s->go[k], LONG_WAIT);
        if (rc == 0) rc = apply(s->fs[s->index[k]], s->action[k], (long)s->index[k]);
        s->rc[k] = rc;
        atomic_store(&s->finished, k + 1);
        if (rc != 0) break;
    }
    return NULL;
}

static void stepper_start(stepper *s, crew_future **fs, size_t steps, const size_t *index,
                          const int *action) {
    assert_true(steps <= MAX_STEPS);
    s->fs = fs;
    s->steps = steps;
    atomic_init(&s->finished, 0);
    for (size_t k = 0; k < steps; k++) {
        s->index[k] = index[k];
        s->action[k] = action[k];
        s->rc[k] = 12345;
        ASSERT_RC(crew_event_init(&s->go[k], 0), 0);
    }
    th_start(&s->th, stepper_main, s);
}

static void stepper_join(stepper *s) {
    /* Release any step not taken so the thread ends. */
    for (size_t k = 0; k < s->steps; k++)
        if (!crew_event_is_set(&s->go[k])) ASSERT_RC(crew_event_set(&s->go[k]), 0);
    th_join(s->th);
    for (size_t k = 0; k < s->steps; k++) ASSERT_RC(crew_event_destroy(&s->go[k]), 0);
}

/* ------------------------------------------------------ callback records */

#define LOG_MAX 2048
typedef struct cb_log {
    _Atomic int n;
    int id[LOG_MAX];
    long tid[LOG_MAX];
    crew_future *future[LOG_MAX];
} cb_log;

typedef struct cb_rec {
    cb_log *log;
    int id;
} cb_rec;

static void log_cb(crew_future *f, void *arg) {
    cb_rec *r = arg;
    int k = atomic_fetch_add(&r->log->n, 1);
    if (k < LOG_MAX) {
        r->log->id[k] = r->id;
        r->log->tid[k] = crew_thread_current_id();
        r->log->future[k] = f;
    }
}

static cb_log *log_new(void) {
    cb_log *l = calloc(1, sizeof *l);
    assert_non_null(l);
    atomic_init(&l->n, 0);
    return l;
}

/* =========================================================== lifetime */

static void test_create_free(void **state) {
    (void)state;
    ASSERT_RC(crew_future_create(NULL, 0), CREW_EINVAL);
    ASSERT_RC(crew_future_create(NULL, sizeof(triple)), CREW_EINVAL);

    crew_future *f = new_future(0);
    assert_pending(f);
    crew_future_free(f);

    f = new_future(sizeof(triple));
    assert_pending(f);
    crew_future_free(f);

    /* A large result is allowed (the copy is made for it). */
    f = new_future(1 << 20);
    static unsigned char big[1 << 20], back[1 << 20];
    for (size_t i = 0; i < sizeof big; i++) big[i] = (unsigned char)(i * 7 + 3);
    ASSERT_RC(crew_future_set_result(f, big), 0);
    ASSERT_RC(crew_future_get(f, back, 0), 0);
    assert_memory_equal(big, back, sizeof big);
    crew_future_free(f);

    crew_future_free(NULL);

#ifndef TEST_SANITIZED
    /* A size whose allocation cannot be made (or whose header would wrap
     * around) is refused, and *out is left alone. The sanitizers' allocators
     * abort on such a request instead of failing it, so only the plain build
     * asks. */
    crew_future *sentinel = (crew_future *)&big;
    f = sentinel;
    int rc = crew_future_create(&f, SIZE_MAX);
    if (rc != CREW_ENOMEM && rc != CREW_EINVAL)
        fail_msg("create(SIZE_MAX) returned %d (%s)", rc, crew_err_name(rc));
    assert_ptr_equal(f, sentinel);
    rc = crew_future_create(&f, SIZE_MAX - 8);
    if (rc != CREW_ENOMEM && rc != CREW_EINVAL)
        fail_msg("create(SIZE_MAX - 8) returned %d (%s)", rc, crew_err_name(rc));
#endif
}

/* A reference keeps the future alive after the creator's free; the last
 * free releases it (ASan reports a use-after-free or a leak otherwise). */
static void test_ref_keeps_alive(void **state) {
    (void)state;
    crew_future *f = new_future(sizeof(triple));
    assert_ptr_equal(crew_future_ref(f), f);
    crew_future_free(f); /* one reference left */
    assert_pending(f);
    finish_with(f, 7);
    triple got;
    ASSERT_RC(crew_future_get(f, &got, 0), 0);
    ASSERT_TRIPLE(got, triple_of(7));
    crew_future_free(f); /* released here */

    /* Many references, dropped in any order relative to completion. */
    f = new_future(0);
    for (int i = 0; i < 100; i++) assert_ptr_equal(crew_future_ref(f), f);
    for (int i = 0; i < 50; i++) crew_future_free(f);
    ASSERT_RC(crew_future_cancel(f), 0);
    for (int i = 0; i < 50; i++) crew_future_free(f);
    assert_true(crew_future_cancelled(f));
    crew_future_free(f);
}

/* Threads adding and dropping references at once leave the count right. */
typedef struct ref_arg {
    pthread_t th;
    crew_future *f;
    crew_event *go;
    long rounds;
    int rc;
} ref_arg;

static void *ref_churn(void *arg) {
    ref_arg *a = arg;
    a->rc = crew_event_wait(a->go, LONG_WAIT);
    for (long i = 0; i < a->rounds && a->rc == 0; i++) {
        crew_future *g = crew_future_ref(a->f);
        if (g != a->f) a->rc = -1;
        if (i % 3 == 0) (void)crew_future_done(g);
        crew_future_free(g);
    }
    return NULL;
}

static void test_ref_concurrent(void **state) {
    (void)state;
    crew_future *f = new_future(sizeof(triple));
    crew_event go;
    ASSERT_RC(crew_event_init(&go, 0), 0);
    ref_arg a[4];
    for (int i = 0; i < 4; i++) {
        a[i] = (ref_arg){.f = f, .go = &go, .rounds = test_scaled(20000), .rc = 12345};
        th_start(&a[i].th, ref_churn, &a[i]);
    }
    ASSERT_RC(crew_event_set(&go), 0);
    finish_with(f, 3);
    for (int i = 0; i < 4; i++) th_join(a[i].th);
    for (int i = 0; i < 4; i++) ASSERT_RC(a[i].rc, 0);
    triple got;
    ASSERT_RC(crew_future_get(f, &got, 0), 0);
    ASSERT_TRIPLE(got, triple_of(3));
    ASSERT_RC(crew_event_destroy(&go), 0);
    crew_future_free(f);
}

/* A completing thread holding the only other reference may drop it right
 * after completing while the waiter wakes and drops its own, as a pool
 * worker and its caller do. */
typedef struct handoff {
    crew_future *f;
    long value;
    int rc;
} handoff;

static void *complete_and_drop(void *arg) {
    handoff *h = arg;
    triple t = triple_of(h->value);
    h->rc = crew_future_set_running(h->f);
    if (h->rc == 0) h->rc = crew_future_set_result(h->f, &t);
    crew_future_free(h->f);
    return NULL;
}

static void test_ref_handoff(void **state) {
    (void)state;
    long rounds = test_scaled(300);
    for (long r = 0; r < rounds; r++) {
        crew_future *f = new_future(sizeof(triple));
        handoff h = {.f = crew_future_ref(f), .value = r, .rc = 12345};
        pthread_t th;
        th_start(&th, complete_and_drop, &h);
        triple got;
        ASSERT_RC(crew_future_get(f, &got, LONG_WAIT), 0);
        ASSERT_TRIPLE(got, triple_of(r));
        crew_future_free(f);
        th_join(th);
        ASSERT_RC(h.rc, 0);
    }
}

/* ========================================================== the states */

static void test_running_then_finished(void **state) {
    (void)state;
    crew_future *f = new_future(sizeof(triple));
    assert_pending(f);

    ASSERT_RC(crew_future_set_running(f), 0);
    assert_true(crew_future_running(f));
    assert_false(crew_future_done(f));
    assert_false(crew_future_cancelled(f));

    ASSERT_RC(crew_future_set_running(f), CREW_EINVAL);
    ASSERT_RC(crew_future_cancel(f), CREW_EBUSY);
    assert_true(crew_future_running(f));
    assert_false(crew_future_cancelled(f));

    triple t = triple_of(42);
    ASSERT_RC(crew_future_set_result(f, &t), 0);
    memset(&t, 0, sizeof t); /* the result was copied */
    assert_true(crew_future_done(f));
    assert_false(crew_future_running(f));
    assert_false(crew_future_cancelled(f));

    /* Finished is final. */
    triple other = triple_of(99);
    ASSERT_RC(crew_future_set_result(f, &other), CREW_EINVAL);
    ASSERT_RC(crew_future_set_error(f, CREW_EPIPE), CREW_EINVAL);
    ASSERT_RC(crew_future_set_running(f), CREW_EINVAL);
    ASSERT_RC(crew_future_cancel(f), CREW_EBUSY);
    assert_true(crew_future_done(f));
    assert_false(crew_future_cancelled(f));

    triple got;
    ASSERT_RC(crew_future_get(f, &got, 0), 0);
    ASSERT_TRIPLE(got, triple_of(42));
    memset(&got, 0, sizeof got);
    ASSERT_RC(crew_future_get(f, &got, CREW_FOREVER), 0);
    ASSERT_TRIPLE(got, triple_of(42));
    ASSERT_RC(crew_future_get(f, NULL, 0), 0);
    crew_future_free(f);
}

static void test_pending_then_cancelled(void **state) {
    (void)state;
    crew_future *f = new_future(sizeof(triple));
    ASSERT_RC(crew_future_cancel(f), 0);
    assert_true(crew_future_cancelled(f));
    assert_true(crew_future_done(f));
    assert_false(crew_future_running(f));

    ASSERT_RC(crew_future_cancel(f), 0); /* again: still 0 */
    ASSERT_RC(crew_future_set_running(f), CREW_ECANCELED);
    assert_false(crew_future_running(f));
    triple t = triple_of(1);
    ASSERT_RC(crew_future_set_result(f, &t), CREW_EINVAL);
    ASSERT_RC(crew_future_set_error(f, CREW_EPIPE), CREW_EINVAL);
    assert_true(crew_future_cancelled(f));

    triple got = triple_of(5);
    ASSERT_RC(crew_future_get(f, &got, 0), CREW_ECANCELED);
    ASSERT_RC(crew_future_get(f, &got, CREW_FOREVER), CREW_ECANCELED);
    ASSERT_RC(crew_future_get(f, NULL, 0.5), CREW_ECANCELED);
    crew_future_free(f);
}

/* set_result and set_error need no set_running first (Python allows it;
 * future.h refuses them only on a finished or cancelled future). */
static void test_complete_without_running(void **state) {
    (void)state;
    crew_future *f = new_future(sizeof(triple));
    triple t = triple_of(8);
    ASSERT_RC(crew_future_set_result(f, &t), 0);
    assert_true(crew_future_done(f));
    assert_false(crew_future_running(f));
    ASSERT_RC(crew_future_set_running(f), CREW_EINVAL);
    triple got;
    ASSERT_RC(crew_future_get(f, &got, 0), 0);
    ASSERT_TRIPLE(got, triple_of(8));
    crew_future_free(f);

    f = new_future(0);
    ASSERT_RC(crew_future_set_error(f, CREW_ENOENT), 0);
    assert_true(crew_future_done(f));
    ASSERT_RC(crew_future_cancel(f), CREW_EBUSY);
    ASSERT_RC(crew_future_get(f, NULL, 0), CREW_ENOENT);
    crew_future_free(f);
}

static void test_set_error(void **state) {
    (void)state;
    crew_future *f = new_future(sizeof(triple));
    ASSERT_RC(crew_future_set_error(f, 0), CREW_EINVAL);
    ASSERT_RC(crew_future_set_error(f, 1), CREW_EINVAL);
    ASSERT_RC(crew_future_set_error(f, 4096), CREW_EINVAL);
    assert_pending(f); /* refused codes change nothing */

    ASSERT_RC(crew_future_set_running(f), 0);
    ASSERT_RC(crew_future_set_error(f, 0), CREW_EINVAL);
    assert_true(crew_future_running(f));
    assert_false(crew_future_done(f));

    ASSERT_RC(crew_future_set_error(f, CREW_EPIPE), 0);
    assert_true(crew_future_done(f));
    assert_false(crew_future_cancelled(f));
    assert_false(crew_future_running(f));
    ASSERT_RC(crew_future_set_error(f, CREW_ENOENT), CREW_EINVAL);
    triple t = triple_of(1);
    ASSERT_RC(crew_future_set_result(f, &t), CREW_EINVAL);
    ASSERT_RC(crew_future_cancel(f), CREW_EBUSY);

    triple got;
    ASSERT_RC(crew_future_get(f, &got, 0), CREW_EPIPE);
    ASSERT_RC(crew_future_get(f, NULL, CREW_FOREVER), CREW_EPIPE);
    crew_future_free(f);

    /* Any negative code travels, not only crew's own. */
    f = new_future(0);
    ASSERT_RC(crew_future_set_running(f), 0);
    ASSERT_RC(crew_future_set_error(f, -123456), 0);
    ASSERT_RC(crew_future_get(f, NULL, 0), -123456);
    crew_future_free(f);
}

static void test_result_sizes(void **state) {
    (void)state;
    /* No result: NULL is fine on both sides. */
    crew_future *f = new_future(0);
    ASSERT_RC(crew_future_set_running(f), 0);
    ASSERT_RC(crew_future_set_result(f, NULL), 0);
    ASSERT_RC(crew_future_get(f, NULL, 0), 0);
    crew_future_free(f);

    /* One byte: exactly one byte is written. */
    f = new_future(1);
    unsigned char one = 0xA5, buf[4] = {0x11, 0x22, 0x33, 0x44};
    ASSERT_RC(crew_future_set_result(f, &one), 0);
    ASSERT_RC(crew_future_get(f, buf, 0), 0);
    assert_int_equal(buf[0], 0xA5);
    assert_int_equal(buf[1], 0x22);
    assert_int_equal(buf[2], 0x33);
    assert_int_equal(buf[3], 0x44);
    crew_future_free(f);

    /* 24 bytes: all of them, no more. */
    f = new_future(sizeof(triple));
    struct {
        triple t;
        uint64_t guard;
    } out = {.guard = 0xDEADBEEFCAFEF00Dull};
    triple in = triple_of(123456789);
    ASSERT_RC(crew_future_set_result(f, &in), 0);
    ASSERT_RC(crew_future_get(f, &out.t, 0), 0);
    ASSERT_TRIPLE(out.t, in);
    assert_true(out.guard == 0xDEADBEEFCAFEF00Dull);
    crew_future_free(f);
}

/* ============================================================== get */

static void test_get_timeouts(void **state) {
    (void)state;
    crew_future *f = new_future(sizeof(triple));
    triple got = triple_of(1);

    double t0 = test_now();
    ASSERT_RC(crew_future_get(f, &got, 0), CREW_ETIMEDOUT);
    assert_true(test_now() - t0 < PROMPT);

    t0 = test_now();
    ASSERT_RC(crew_future_get(f, &got, SHORT), CREW_ETIMEDOUT);
    ASSERT_ELAPSED(test_now() - t0, SHORT);
    ASSERT_TRIPLE(got, triple_of(1)); /* untouched */

    /* Running is not done either. */
    ASSERT_RC(crew_future_set_running(f), 0);
    ASSERT_RC(crew_future_get(f, &got, 0), CREW_ETIMEDOUT);
    t0 = test_now();
    ASSERT_RC(crew_future_get(f, NULL, 0.25), CREW_ETIMEDOUT);
    ASSERT_ELAPSED(test_now() - t0, 0.25);

    /* Timeouts that make no sense (clock.h). */
    ASSERT_RC(crew_future_get(f, &got, -1.0), CREW_EINVAL);
    ASSERT_RC(crew_future_get(f, &got, NAN), CREW_EINVAL);

    /* A timed get that has not expired returns what is there. */
    triple t = triple_of(2);
    ASSERT_RC(crew_future_set_result(f, &t), 0);
    t0 = test_now();
    ASSERT_RC(crew_future_get(f, &got, 20.0), 0);
    assert_true(test_now() - t0 < PROMPT);
    ASSERT_TRIPLE(got, triple_of(2));
    crew_future_free(f);
}

static void test_get_woken_by_result(void **state) {
    (void)state;
    crew_future *f = new_future(sizeof(triple));
    helper h = {.f = f, .timeout = CREW_FOREVER};
    helper_start(&h, op_get);
    assert_blocked(&h);
    ASSERT_RC(crew_future_set_running(f), 0);
    assert_blocked(&h); /* running wakes nobody for good */
    triple t = triple_of(77);
    ASSERT_RC(crew_future_set_result(f, &t), 0);
    th_join(h.th);
    ASSERT_RC(h.rc, 0);
    ASSERT_TRIPLE(h.got, triple_of(77));
    crew_future_free(f);
}

static void test_get_woken_by_error(void **state) {
    (void)state;
    crew_future *f = new_future(sizeof(triple));
    helper h = {.f = f, .timeout = LONG_WAIT};
    helper_start(&h, op_get);
    assert_blocked(&h);
    ASSERT_RC(crew_future_set_running(f), 0);
    ASSERT_RC(crew_future_set_error(f, CREW_ECONNRESET), 0);
    th_join(h.th);
    ASSERT_RC(h.rc, CREW_ECONNRESET);
    assert_true(h.elapsed < LONG_WAIT - 1.0);
    crew_future_free(f);
}

static void test_get_woken_by_cancel(void **state) {
    (void)state;
    crew_future *f = new_future(sizeof(triple));
    helper h = {.f = f, .timeout = LONG_WAIT};
    helper_start(&h, op_get);
    assert_blocked(&h);
    ASSERT_RC(crew_future_cancel(f), 0);
    th_join(h.th);
    ASSERT_RC(h.rc, CREW_ECANCELED);
    assert_true(h.elapsed < LONG_WAIT - 1.0);
    crew_future_free(f);
}

/* The main thread waits; a helper completes the future after it is told. */
typedef struct late_completer {
    crew_future *f;
    crew_event go;
    long value;
    int rc;
} late_completer;

static void *complete_when_told(void *arg) {
    late_completer *c = arg;
    c->rc = crew_event_wait(&c->go, LONG_WAIT);
    if (c->rc == 0) {
        triple t = triple_of(c->value);
        c->rc = crew_future_set_running(c->f);
        if (c->rc == 0) c->rc = crew_future_set_result(c->f, &t);
    }
    return NULL;
}

static void test_get_in_main_woken(void **state) {
    (void)state;
    crew_future *f = new_future(sizeof(triple));
    late_completer c = {.f = f, .value = 31, .rc = 12345};
    ASSERT_RC(crew_event_init(&c.go, 0), 0);
    pthread_t th;
    th_start(&th, complete_when_told, &c);
    triple got;
    ASSERT_RC(crew_future_get(f, &got, 0), CREW_ETIMEDOUT);
    ASSERT_RC(crew_event_set(&c.go), 0);
    ASSERT_RC(crew_future_get(f, &got, LONG_WAIT), 0);
    ASSERT_TRIPLE(got, triple_of(31));
    th_join(th);
    ASSERT_RC(c.rc, 0);
    ASSERT_RC(crew_event_destroy(&c.go), 0);
    crew_future_free(f);
}

/* Every kind of waiter on one future wakes when it completes. */
static void test_many_waiters_all_wake(void **state) {
    (void)state;
    crew_future *f = new_future(sizeof(triple));
    crew_future *fs[1] = {f};
    enum { GETTERS = 8, WAITERS = 3, ITERS = 2, ALL = GETTERS + WAITERS + ITERS };
    helper h[ALL];
    memset(h, 0, sizeof h);
    for (int i = 0; i < ALL; i++) {
        h[i].f = f;
        h[i].fs = fs;
        h[i].n = 1;
        h[i].timeout = i % 2 ? LONG_WAIT : CREW_FOREVER;
        h[i].mode = (crew_future_wait_mode)(i % 3);
        helper_start(&h[i], i < GETTERS ? op_get : i < GETTERS + WAITERS ? op_wait : op_iter);
    }
    for (int i = 0; i < ALL; i++) assert_blocked(&h[i]);
    finish_with(f, 1000);
    for (int i = 0; i < ALL; i++) th_join(h[i].th);
    for (int i = 0; i < GETTERS; i++) {
        ASSERT_RC(h[i].rc, 0);
        ASSERT_TRIPLE(h[i].got, triple_of(1000));
    }
    for (int i = GETTERS; i < GETTERS + WAITERS; i++) ASSERT_RC(h[i].rc, 1);
    for (int i = GETTERS + WAITERS; i < ALL; i++) {
        ASSERT_RC(h[i].rc, 0);
        assert_int_equal(h[i].seen, 1);
        assert_int_equal(h[i].order[0], 0);
        ASSERT_RC(h[i].rc_end, CREW_EOF);
    }
    crew_future_free(f);
}

/* ========================================================== callbacks */

static void test_callbacks_order_once(void **state) {
    (void)state;
    cb_log *log = log_new();
    crew_future *f = new_future(sizeof(triple));
    cb_rec r[4] = {{log, 1}, {log, 2}, {log, 3}, {log, 4}};
    for (int i = 0; i < 3; i++) ASSERT_RC(crew_future_add_done_callback(f, log_cb, &r[i]), 0);
    assert_int_equal(atomic_load(&log->n), 0);
    ASSERT_RC(crew_future_set_running(f), 0);
    assert_int_equal(atomic_load(&log->n), 0);
    triple t = triple_of(5);
    ASSERT_RC(crew_future_set_result(f, &t), 0);
    /* Run by set_result, before it returns, in the order added. */
    assert_int_equal(atomic_load(&log->n), 3);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(log->id[i], i + 1);
        assert_ptr_equal(log->future[i], f);
        assert_int_equal(log->tid[i], crew_thread_current_id());
    }
    /* Refused completions run nothing again. */
    ASSERT_RC(crew_future_set_result(f, &t), CREW_EINVAL);
    ASSERT_RC(crew_future_set_error(f, CREW_EPIPE), CREW_EINVAL);
    ASSERT_RC(crew_future_cancel(f), CREW_EBUSY);
    assert_int_equal(atomic_load(&log->n), 3);

    /* Added to a completed future: run at once, by the adder. */
    ASSERT_RC(crew_future_add_done_callback(f, log_cb, &r[3]), 0);
    assert_int_equal(atomic_load(&log->n), 4);
    assert_int_equal(log->id[3], 4);
    assert_int_equal(log->tid[3], crew_thread_current_id());
    crew_future_free(f);
    assert_int_equal(atomic_load(&log->n), 4); /* free runs none */
    free(log);
}

static void test_callbacks_on_cancel_and_error(void **state) {
    (void)state;
    cb_log *log = log_new();
    cb_rec r[4] = {{log, 1}, {log, 2}, {log, 3}, {log, 4}};

    crew_future *f = new_future(0);
    ASSERT_RC(crew_future_add_done_callback(f, log_cb, &r[0]), 0);
    ASSERT_RC(crew_future_add_done_callback(f, log_cb, &r[1]), 0);
    ASSERT_RC(crew_future_cancel(f), 0);
    assert_int_equal(atomic_load(&log->n), 2);
    assert_int_equal(log->id[0], 1);
    assert_int_equal(log->id[1], 2);
    ASSERT_RC(crew_future_cancel(f), 0); /* cancelling again runs none */
    ASSERT_RC(crew_future_set_running(f), CREW_ECANCELED);
    assert_int_equal(atomic_load(&log->n), 2);
    ASSERT_RC(crew_future_add_done_callback(f, log_cb, &r[2]), 0);
    assert_int_equal(atomic_load(&log->n), 3);
    assert_int_equal(log->id[2], 3);
    crew_future_free(f);

    f = new_future(0);
    ASSERT_RC(crew_future_add_done_callback(f, log_cb, &r[3]), 0);
    ASSERT_RC(crew_future_set_running(f), 0);
    ASSERT_RC(crew_future_set_error(f, CREW_EPIPE), 0);
    assert_int_equal(atomic_load(&log->n), 4);
    assert_int_equal(log->id[3], 4);
    assert_ptr_equal(log->future[3], f);
    crew_future_free(f);
    free(log);
}

/* The same callback and argument added twice runs twice; many callbacks
 * keep their order. */
static void test_callbacks_many(void **state) {
    (void)state;
    cb_log *log = log_new();
    enum { N = 1000 };
    cb_rec *r = calloc(N, sizeof *r);
    assert_non_null(r);
    crew_future *f = new_future(sizeof(triple));
    for (int i = 0; i < N; i++) {
        r[i] = (cb_rec){log, i};
        ASSERT_RC(crew_future_add_done_callback(f, log_cb, &r[i]), 0);
    }
    ASSERT_RC(crew_future_add_done_callback(f, log_cb, &r[0]), 0);
    finish_with(f, 0);
    assert_int_equal(atomic_load(&log->n), N + 1);
    for (int i = 0; i < N; i++) assert_int_equal(log->id[i], i);
    assert_int_equal(log->id[N], 0);
    crew_future_free(f);

    /* Callbacks never run on a future freed while pending; nothing leaks. */
    f = new_future(0);
    for (int i = 0; i < 10; i++) ASSERT_RC(crew_future_add_done_callback(f, log_cb, &r[i]), 0);
    crew_future_free(f);
    assert_int_equal(atomic_load(&log->n), N + 1);
    free(r);
    free(log);
}

static _Atomic int null_arg_calls;

static void null_arg_cb(crew_future *f, void *arg) {
    (void)f;
    if (arg == NULL) atomic_fetch_add(&null_arg_calls, 1);
}

static void test_callback_invalid(void **state) {
    (void)state;
    cb_log *log = log_new();
    cb_rec r = {log, 1};
    crew_future *f = new_future(0);
    ASSERT_RC(crew_future_add_done_callback(f, NULL, &r), CREW_EINVAL);
    ASSERT_RC(crew_future_add_done_callback(NULL, log_cb, &r), CREW_EINVAL);
    /* A NULL argument is the callback's business. */
    ASSERT_RC(crew_future_add_done_callback(f, null_arg_cb, NULL), 0);
    ASSERT_RC(crew_future_cancel(f), 0);
    assert_int_equal(atomic_load(&null_arg_calls), 1);
    ASSERT_RC(crew_future_add_done_callback(f, NULL, &r), CREW_EINVAL);
    assert_int_equal(atomic_load(&log->n), 0);
    crew_future_free(f);
    free(log);
}

/* A callback may look at the future it was called for: done, cancelled,
 * get with timeout 0, and add another callback (which runs at once). */
typedef struct inspect {
    bool done, running, cancelled;
    int get_rc;
    triple got;
    int add_rc;
    cb_log *log;
    cb_rec nested;
    _Atomic int calls;
} inspect;

static void inspect_cb(crew_future *f, void *arg) {
    inspect *in = arg;
    atomic_fetch_add(&in->calls, 1);
    in->done = crew_future_done(f);
    in->running = crew_future_running(f);
    in->cancelled = crew_future_cancelled(f);
    in->get_rc = crew_future_get(f, &in->got, 0);
    in->add_rc = crew_future_add_done_callback(f, log_cb, &in->nested);
}

static void test_callback_uses_future(void **state) {
    (void)state;
    inspect in = {.get_rc = 12345, .add_rc = 12345};
    in.log = log_new();
    in.nested = (cb_rec){in.log, 9};
    crew_future *f = new_future(sizeof(triple));
    ASSERT_RC(crew_future_add_done_callback(f, inspect_cb, &in), 0);
    finish_with(f, 66);
    assert_int_equal(atomic_load(&in.calls), 1);
    assert_true(in.done);
    assert_false(in.running);
    assert_false(in.cancelled);
    ASSERT_RC(in.get_rc, 0);
    ASSERT_TRIPLE(in.got, triple_of(66));
    ASSERT_RC(in.add_rc, 0);
    assert_int_equal(atomic_load(&in.log->n), 1);
    assert_int_equal(in.log->id[0], 9);
    crew_future_free(f);

    /* The same on cancel. */
    inspect in2 = {.get_rc = 12345, .add_rc = 12345, .log = in.log, .nested = {in.log, 10}};
    f = new_future(sizeof(triple));
    ASSERT_RC(crew_future_add_done_callback(f, inspect_cb, &in2), 0);
    ASSERT_RC(crew_future_cancel(f), 0);
    assert_int_equal(atomic_load(&in2.calls), 1);
    assert_true(in2.done);
    assert_true(in2.cancelled);
    ASSERT_RC(in2.get_rc, CREW_ECANCELED);
    ASSERT_RC(in2.add_rc, 0);
    assert_int_equal(atomic_load(&in.log->n), 2);
    assert_int_equal(in.log->id[1], 10);
    crew_future_free(f);
    free(in.log);
}

/* Callbacks run in the thread that completes the future. */
typedef struct crew_completer {
    crew_future *f;
    int action;
} crew_completer;

static int crew_complete(void *arg) {
    crew_completer *c = arg;
    return apply(c->f, c->action, 11);
}

static void test_callback_thread(void **state) {
    (void)state;
    const int actions[3] = {ACT_RESULT, ACT_ERROR, ACT_CANCEL};
    for (int a = 0; a < 3; a++) {
        cb_log *log = log_new();
        cb_rec r[2] = {{log, 1}, {log, 2}};
        crew_future *f = new_future(sizeof(triple));
        ASSERT_RC(crew_future_add_done_callback(f, log_cb, &r[0]), 0);
        ASSERT_RC(crew_future_add_done_callback(f, log_cb, &r[1]), 0);
        crew_completer c = {.f = f, .action = actions[a]};
        crew_thread *t = NULL;
        ASSERT_RC(crew_thread_start(&t, crew_complete, &c, NULL), 0);
        long id = crew_thread_id(t);
        int result = 12345;
        ASSERT_RC(crew_thread_join(t, LONG_WAIT, &result), 0);
        ASSERT_RC(result, 0);
        assert_int_equal(atomic_load(&log->n), 2);
        assert_int_equal(log->id[0], 1);
        assert_int_equal(log->id[1], 2);
        assert_int_equal(log->tid[0], id);
        assert_int_equal(log->tid[1], id);
        assert_true(log->tid[0] != crew_thread_current_id());
        crew_thread_free(t);
        crew_future_free(f);
        free(log);
    }
}

/* ============================================================== wait */

static crew_future **new_futures(size_t n) {
    crew_future **fs = calloc(n, sizeof *fs);
    assert_non_null(fs);
    for (size_t i = 0; i < n; i++) fs[i] = new_future(sizeof(triple));
    return fs;
}

static void free_futures(crew_future **fs, size_t n) {
    for (size_t i = 0; i < n; i++) crew_future_free(fs[i]);
    free(fs);
}

static void test_wait_invalid(void **state) {
    (void)state;
    crew_future **fs = new_futures(2);
    ASSERT_RC(crew_future_wait(NULL, 0, CREW_ALL_COMPLETED, 0), 0);
    ASSERT_RC(crew_future_wait(fs, 0, CREW_ALL_COMPLETED, 0), 0);
    ASSERT_RC(crew_future_wait(fs, 0, CREW_FIRST_COMPLETED, LONG_WAIT), 0);
    ASSERT_RC(crew_future_wait(fs, 0, CREW_FIRST_EXCEPTION, CREW_FOREVER), 0);
    ASSERT_RC(crew_future_wait(NULL, 1, CREW_ALL_COMPLETED, 0), CREW_EINVAL);
    ASSERT_RC(crew_future_wait(NULL, 3, CREW_FIRST_COMPLETED, LONG_WAIT), CREW_EINVAL);
    ASSERT_RC(crew_future_wait(fs, 2, (crew_future_wait_mode)99, 0), CREW_EINVAL);
    ASSERT_RC(crew_future_wait(fs, 2, CREW_ALL_COMPLETED, -1.0), CREW_EINVAL);
    ASSERT_RC(crew_future_wait(fs, 2, CREW_ALL_COMPLETED, NAN), CREW_EINVAL);
    crew_future *withnull[2] = {fs[0], NULL};
    ASSERT_RC(crew_future_wait(withnull, 2, CREW_ALL_COMPLETED, 0), CREW_EINVAL);
    assert_pending(fs[0]);
    assert_pending(fs[1]);
    free_futures(fs, 2);
}

static void test_wait_already_complete(void **state) {
    (void)state;
    crew_future **fs = new_futures(4);
    ASSERT_RC(crew_future_wait(fs, 4, CREW_ALL_COMPLETED, 0), CREW_ETIMEDOUT);
    ASSERT_RC(crew_future_wait(fs, 4, CREW_FIRST_COMPLETED, 0), CREW_ETIMEDOUT);
    ASSERT_RC(crew_future_wait(fs, 4, CREW_FIRST_EXCEPTION, 0), CREW_ETIMEDOUT);

    finish_with(fs[1], 1);
    ASSERT_RC(crew_future_cancel(fs[3]), 0);
    /* Running is not complete. */
    ASSERT_RC(crew_future_set_running(fs[0]), 0);
    ASSERT_RC(crew_future_wait(fs, 4, CREW_FIRST_COMPLETED, 0), 2);
    ASSERT_RC(crew_future_wait(fs, 4, CREW_ALL_COMPLETED, 0), CREW_ETIMEDOUT);
    /* A cancelled future is no exception. */
    ASSERT_RC(crew_future_wait(fs, 4, CREW_FIRST_EXCEPTION, 0), CREW_ETIMEDOUT);
    ASSERT_RC(crew_future_wait(fs, 1, CREW_FIRST_COMPLETED, 0), CREW_ETIMEDOUT);
    ASSERT_RC(crew_future_wait(fs + 1, 1, CREW_ALL_COMPLETED, 0), 1);

    ASSERT_RC(crew_future_set_error(fs[0], CREW_EPIPE), 0);
    ASSERT_RC(crew_future_wait(fs, 4, CREW_FIRST_EXCEPTION, 0), 3);
    ASSERT_RC(crew_future_wait(fs, 4, CREW_FIRST_EXCEPTION, LONG_WAIT), 3);
    ASSERT_RC(crew_future_wait(fs, 4, CREW_ALL_COMPLETED, 0), CREW_ETIMEDOUT);

    triple t = triple_of(2);
    ASSERT_RC(crew_future_set_result(fs[2], &t), 0);
    for (int m = 0; m < 3; m++) {
        ASSERT_RC(crew_future_wait(fs, 4, (crew_future_wait_mode)m, 0), 4);
        ASSERT_RC(crew_future_wait(fs, 4, (crew_future_wait_mode)m, CREW_FOREVER), 4);
    }
    /* The same future twice in the array counts twice. */
    crew_future *dup[3] = {fs[1], fs[1], fs[2]};
    ASSERT_RC(crew_future_wait(dup, 3, CREW_ALL_COMPLETED, 0), 3);
    free_futures(fs, 4);
}

static void test_wait_timeouts(void **state) {
    (void)state;
    crew_future **fs = new_futures(3);
    finish_with(fs[0], 0);
    for (int m = 0; m < 3; m++) {
        if (m == CREW_FIRST_COMPLETED) continue; /* holds already */
        double t0 = test_now();
        ASSERT_RC(crew_future_wait(fs, 3, (crew_future_wait_mode)m, SHORT), CREW_ETIMEDOUT);
        ASSERT_ELAPSED(test_now() - t0, SHORT);
    }
    double t0 = test_now();
    ASSERT_RC(crew_future_wait(fs + 1, 2, CREW_FIRST_COMPLETED, SHORT), CREW_ETIMEDOUT);
    ASSERT_ELAPSED(test_now() - t0, SHORT);
    t0 = test_now();
    ASSERT_RC(crew_future_wait(fs, 3, CREW_FIRST_COMPLETED, LONG_WAIT), 1);
    assert_true(test_now() - t0 < PROMPT);
    free_futures(fs, 3);
}

static void test_wait_all_completed_blocks(void **state) {
    (void)state;
    crew_future **fs = new_futures(3);
    helper h = {.fs = fs, .n = 3, .mode = CREW_ALL_COMPLETED, .timeout = LONG_WAIT};
    helper_start(&h, op_wait);
    assert_blocked(&h);
    finish_with(fs[2], 2);
    assert_blocked(&h);
    ASSERT_RC(crew_future_cancel(fs[0]), 0);
    assert_blocked(&h);
    ASSERT_RC(crew_future_set_running(fs[1]), 0);
    assert_blocked(&h);
    ASSERT_RC(crew_future_set_error(fs[1], CREW_EPIPE), 0);
    th_join(h.th);
    ASSERT_RC(h.rc, 3);
    free_futures(fs, 3);
}

static void test_wait_first_completed_blocks(void **state) {
    (void)state;
    const int actions[3] = {ACT_RESULT, ACT_ERROR, ACT_CANCEL};
    for (int a = 0; a < 3; a++) {
        crew_future **fs = new_futures(3);
        helper h = {.fs = fs, .n = 3, .mode = CREW_FIRST_COMPLETED, .timeout = LONG_WAIT};
        helper_start(&h, op_wait);
        assert_blocked(&h);
        ASSERT_RC(crew_future_set_running(fs[0]), 0); /* running: not yet */
        assert_blocked(&h);
        ASSERT_RC(apply(fs[1], actions[a], 1), 0);
        th_join(h.th);
        /* Nothing else completed before it returned. */
        ASSERT_RC(h.rc, 1);
        assert_true(crew_future_done(fs[1]));
        assert_false(crew_future_done(fs[0]));
        assert_false(crew_future_done(fs[2]));
        free_futures(fs, 3);
    }
}

static void test_wait_first_exception_blocks(void **state) {
    (void)state;
    crew_future **fs = new_futures(4);
    helper h = {.fs = fs, .n = 4, .mode = CREW_FIRST_EXCEPTION, .timeout = LONG_WAIT};
    helper_start(&h, op_wait);
    assert_blocked(&h);
    finish_with(fs[0], 0);
    assert_blocked(&h); /* a result is no exception */
    ASSERT_RC(crew_future_cancel(fs[1]), 0);
    assert_blocked(&h); /* nor is a cancel */
    ASSERT_RC(crew_future_set_running(fs[2]), 0);
    ASSERT_RC(crew_future_set_error(fs[2], CREW_EPIPE), 0);
    th_join(h.th);
    ASSERT_RC(h.rc, 3);
    assert_false(crew_future_done(fs[3])); /* returned with one still pending */
    free_futures(fs, 4);

    /* No error at all: it returns when all have completed. */
    fs = new_futures(3);
    helper h2 = {.fs = fs, .n = 3, .mode = CREW_FIRST_EXCEPTION, .timeout = LONG_WAIT};
    helper_start(&h2, op_wait);
    assert_blocked(&h2);
    finish_with(fs[1], 1);
    assert_blocked(&h2);
    ASSERT_RC(crew_future_cancel(fs[0]), 0);
    assert_blocked(&h2);
    finish_with(fs[2], 2);
    th_join(h2.th);
    ASSERT_RC(h2.rc, 3);
    free_futures(fs, 3);
}

/* Another thread completes the futures in a known order; the main thread
 * waits for each in turn. */
static void test_wait_completed_by_other_thread(void **state) {
    (void)state;
    enum { N = 5 };
    crew_future **fs = new_futures(N);
    const size_t index[N] = {3, 0, 4, 1, 2};
    const int action[N] = {ACT_RESULT, ACT_ERROR, ACT_CANCEL, ACT_RESULT, ACT_RESULT};
    stepper *s = calloc(1, sizeof *s);
    assert_non_null(s);
    stepper_start(s, fs, N, index, action);
    for (size_t k = 0; k < N; k++) {
        ASSERT_RC(crew_future_wait(fs, N, CREW_ALL_COMPLETED, 0), CREW_ETIMEDOUT);
        ASSERT_RC(crew_event_set(&s->go[k]), 0);
        /* The futures not yet completed, with the one about to be first. */
        crew_future *rest[N];
        size_t m = 0;
        for (size_t j = k; j < N; j++) rest[m++] = fs[index[j]];
        ASSERT_RC(crew_future_wait(rest, m, CREW_FIRST_COMPLETED, LONG_WAIT), 1);
        assert_true(crew_future_done(fs[index[k]]));
        ASSERT_RC(crew_future_wait(fs, N, CREW_FIRST_COMPLETED, 0), (int)k + 1);
    }
    ASSERT_RC(crew_future_wait(fs, N, CREW_ALL_COMPLETED, LONG_WAIT), N);
    stepper_join(s);
    for (size_t k = 0; k < N; k++) ASSERT_RC(s->rc[k], 0);
    triple got;
    ASSERT_RC(crew_future_get(fs[3], &got, 0), 0);
    ASSERT_TRIPLE(got, triple_of(3));
    ASSERT_RC(crew_future_get(fs[0], &got, 0), CREW_EPIPE);
    ASSERT_RC(crew_future_get(fs[4], &got, 0), CREW_ECANCELED);
    free(s);
    free_futures(fs, N);
}

/* wait() returns while other futures of its set are being completed by
 * another thread: whatever it registered must be gone when it returns. */
typedef struct completer_all {
    crew_future **fs;
    size_t n;
    crew_event go;
    int rc;
} completer_all;

static void *complete_all_and_drop(void *arg) {
    completer_all *c = arg;
    c->rc = crew_event_wait(&c->go, LONG_WAIT);
    for (size_t i = 0; i < c->n; i++) {
        if (c->rc == 0) {
            triple t = triple_of((long)i);
            c->rc = crew_future_set_running(c->fs[i]);
            if (c->rc == 0) c->rc = crew_future_set_result(c->fs[i], &t);
        }
        crew_future_free(c->fs[i]);
    }
    return NULL;
}

static void test_wait_returns_during_completion(void **state) {
    (void)state;
    enum { N = 6 };
    long rounds = test_scaled(300);
    for (long r = 0; r < rounds; r++) {
        crew_future **fs = new_futures(N);
        crew_future *refs[N];
        for (size_t i = 0; i < N; i++) refs[i] = crew_future_ref(fs[i]);
        completer_all c = {.fs = refs, .n = N, .rc = 12345};
        ASSERT_RC(crew_event_init(&c.go, 0), 0);
        pthread_t th;
        th_start(&th, complete_all_and_drop, &c);
        ASSERT_RC(crew_event_set(&c.go), 0);
        crew_future_wait_mode mode = (crew_future_wait_mode)(r % 3);
        int rc = crew_future_wait(fs, N, mode, LONG_WAIT);
        if (mode != CREW_FIRST_COMPLETED)
            ASSERT_RC(rc, N); /* no errors: FIRST_EXCEPTION waits for all */
        else if (rc < 1 || rc > N)
            fail_msg("wait returned %d", rc);
        free_futures(fs, N); /* maybe before the completer is done with them */
        th_join(th);
        ASSERT_RC(c.rc, 0);
        ASSERT_RC(crew_event_destroy(&c.go), 0);
    }
}

/* Once a future shows as complete (done(), wait(), the iterator), get with
 * timeout 0 has its outcome: Python's result(timeout=0) never raises
 * TimeoutError on a done future. Another thread completes each future while
 * the main thread watches for it as closely as it can. */
typedef struct racer {
    crew_future *f;
    long value;
    int action;
    int rc;
} racer;

static void *race_complete(void *arg) {
    racer *r = arg;
    r->rc = apply(r->f, r->action, r->value);
    return NULL;
}

static void test_done_means_gettable(void **state) {
    (void)state;
    long rounds = test_scaled(2000), bad = 0, first_bad = -1, bad_how[3] = {0, 0, 0};
    int first_rc = 0;
    for (long r = 0; r < rounds; r++) {
        crew_future *f = new_future(sizeof(triple));
        crew_future *fs[1] = {f};
        crew_future_iter *it = NULL;
        int how = (int)(r % 3);
        if (how == 2) ASSERT_RC(crew_future_iter_start(&it, fs, 1), 0);
        racer rr = {.f = f, .value = r, .action = r % 5 == 4 ? ACT_CANCEL : ACT_RESULT,
                     .rc = 12345};
        pthread_t th;
        th_start(&th, race_complete, &rr);
        if (how == 0) {
            double deadline = test_now() + LONG_WAIT;
            while (!crew_future_done(f))
                if (test_now() > deadline) fail_msg("round %ld: never done", r);
        } else if (how == 1) {
            ASSERT_RC(crew_future_wait(fs, 1, CREW_FIRST_COMPLETED, LONG_WAIT), 1);
        } else {
            size_t idx = SIZE_MAX;
            ASSERT_RC(crew_future_iter_next(it, &idx, LONG_WAIT), 0);
        }
        triple got;
        int rc = crew_future_get(f, &got, 0);
        int want = rr.action == ACT_CANCEL ? CREW_ECANCELED : 0;
        if (rc != want) {
            bad_how[how]++;
            if (bad++ == 0) {
                first_bad = r;
                first_rc = rc;
            }
        }
        th_join(th);
        ASSERT_RC(rr.rc, 0);
        crew_future_iter_free(it);
        crew_future_free(f);
    }
    if (bad != 0)
        fail_msg("%ld of %ld rounds: get(timeout 0) on a complete future gave %d (%s), first "
                 "in round %ld; seen complete by done() %ld, wait() %ld, the iterator %ld times",
                 bad, rounds, first_rc, crew_err_name(first_rc), first_bad, bad_how[0],
                 bad_how[1], bad_how[2]);
}

/* ========================================================= as_completed */

static void test_iter_invalid(void **state) {
    (void)state;
    crew_future **fs = new_futures(2);
    crew_future_iter *it = NULL;
    ASSERT_RC(crew_future_iter_start(NULL, fs, 2), CREW_EINVAL);
    ASSERT_RC(crew_future_iter_start(&it, NULL, 2), CREW_EINVAL);
    crew_future *withnull[2] = {fs[0], NULL};
    ASSERT_RC(crew_future_iter_start(&it, withnull, 2), CREW_EINVAL);

    /* No futures: the end at once. */
    ASSERT_RC(crew_future_iter_start(&it, fs, 0), 0);
    assert_non_null(it);
    size_t idx = 77;
    double t0 = test_now();
    ASSERT_RC(crew_future_iter_next(it, &idx, LONG_WAIT), CREW_EOF);
    assert_true(test_now() - t0 < PROMPT);
    crew_future_iter_free(it);
    it = NULL;
    ASSERT_RC(crew_future_iter_start(&it, NULL, 0), 0);
    ASSERT_RC(crew_future_iter_next(it, &idx, 0), CREW_EOF);
    crew_future_iter_free(it);

    ASSERT_RC(crew_future_iter_start(&it, fs, 2), 0);
    ASSERT_RC(crew_future_iter_next(it, NULL, 0), CREW_EINVAL);
    ASSERT_RC(crew_future_iter_next(NULL, &idx, 0), CREW_EINVAL);
    ASSERT_RC(crew_future_iter_next(it, &idx, -1.0), CREW_EINVAL);
    ASSERT_RC(crew_future_iter_next(it, &idx, NAN), CREW_EINVAL);
    crew_future_iter_free(it);
    crew_future_iter_free(NULL);
    free_futures(fs, 2);
}

static void test_iter_timeouts(void **state) {
    (void)state;
    crew_future **fs = new_futures(2);
    crew_future_iter *it = NULL;
    ASSERT_RC(crew_future_iter_start(&it, fs, 2), 0);
    size_t idx = 77;
    ASSERT_RC(crew_future_iter_next(it, &idx, 0), CREW_ETIMEDOUT);
    double t0 = test_now();
    ASSERT_RC(crew_future_iter_next(it, &idx, SHORT), CREW_ETIMEDOUT);
    ASSERT_ELAPSED(test_now() - t0, SHORT);
    ASSERT_RC(crew_future_set_running(fs[1]), 0);
    ASSERT_RC(crew_future_iter_next(it, &idx, 0), CREW_ETIMEDOUT); /* running */
    assert_int_equal(idx, 77);
    /* A timeout loses nothing: the next completion is still reported. */
    ASSERT_RC(crew_future_set_error(fs[1], CREW_EPIPE), 0);
    ASSERT_RC(crew_future_iter_next(it, &idx, 0), 0);
    assert_int_equal(idx, 1);
    ASSERT_RC(crew_future_iter_next(it, &idx, 0), CREW_ETIMEDOUT);
    ASSERT_RC(crew_future_cancel(fs[0]), 0);
    ASSERT_RC(crew_future_iter_next(it, &idx, SHORT), 0);
    assert_int_equal(idx, 0);
    t0 = test_now();
    ASSERT_RC(crew_future_iter_next(it, &idx, LONG_WAIT), CREW_EOF);
    ASSERT_RC(crew_future_iter_next(it, &idx, 0), CREW_EOF);
    assert_true(test_now() - t0 < PROMPT);
    crew_future_iter_free(it);
    free_futures(fs, 2);
}

/* Those complete at the start come first (each once, in any order), then
 * the rest in the order another thread completes them. */
static void test_iter_completion_order(void **state) {
    (void)state;
    enum { N = 8 };
    crew_future **fs = new_futures(N);
    finish_with(fs[5], 5);
    ASSERT_RC(crew_future_cancel(fs[2]), 0);
    ASSERT_RC(crew_future_set_running(fs[6]), 0);
    ASSERT_RC(crew_future_set_error(fs[6], CREW_EPIPE), 0);
    ASSERT_RC(crew_future_set_running(fs[0]), 0); /* running: later */

    crew_future_iter *it = NULL;
    ASSERT_RC(crew_future_iter_start(&it, fs, N), 0);
    int count[N] = {0};
    for (int k = 0; k < 3; k++) {
        size_t idx = SIZE_MAX;
        ASSERT_RC(crew_future_iter_next(it, &idx, 0), 0);
        assert_true(idx == 5 || idx == 2 || idx == 6);
        count[idx]++;
    }
    assert_int_equal(count[5], 1);
    assert_int_equal(count[2], 1);
    assert_int_equal(count[6], 1);
    size_t idx = SIZE_MAX;
    ASSERT_RC(crew_future_iter_next(it, &idx, 0), CREW_ETIMEDOUT);

    /* The rest complete one at a time in another thread, each only after
     * the previous one has been yielded. fs[0] is running already, so its
     * step only fails it. */
    const size_t index[5] = {4, 0, 7, 1, 3};
    const int action[5] = {ACT_RESULT, ACT_FAIL, ACT_CANCEL, ACT_ERROR, ACT_RESULT};
    stepper *s = calloc(1, sizeof *s);
    assert_non_null(s);
    stepper_start(s, fs, 5, index, action);
    for (size_t k = 0; k < 5; k++) {
        ASSERT_RC(crew_event_set(&s->go[k]), 0);
        idx = SIZE_MAX;
        ASSERT_RC(crew_future_iter_next(it, &idx, LONG_WAIT), 0);
        assert_int_equal(idx, index[k]);
        if (!TEST_WAIT_UNTIL(atomic_load(&s->finished) > k, SETTLE))
            fail_msg("step %zu did not finish", k);
        ASSERT_RC(s->rc[k], 0);
        count[idx]++;
    }
    for (size_t i = 0; i < N; i++) assert_int_equal(count[i], 1);
    ASSERT_RC(crew_future_iter_next(it, &idx, LONG_WAIT), CREW_EOF);
    ASSERT_RC(crew_future_iter_next(it, &idx, 0), CREW_EOF);
    crew_future_iter_free(it);
    stepper_join(s);
    free(s);
    free_futures(fs, N);
}

/* The iterator keeps its own references: the caller may drop its own while
 * iterating, and a thread holding the only other one completes and drops it. */
static void test_iter_holds_references(void **state) {
    (void)state;
    enum { N = 4 };
    crew_future **fs = new_futures(N);
    crew_future *refs[N];
    for (size_t i = 0; i < N; i++) refs[i] = crew_future_ref(fs[i]);
    crew_future_iter *it = NULL;
    ASSERT_RC(crew_future_iter_start(&it, fs, N), 0);
    /* The caller's references go; the array itself must stay valid. */
    for (size_t i = 0; i < N; i++) crew_future_free(fs[i]);
    completer_all c = {.fs = refs, .n = N, .rc = 12345};
    ASSERT_RC(crew_event_init(&c.go, 0), 0);
    pthread_t th;
    th_start(&th, complete_all_and_drop, &c);
    size_t idx;
    ASSERT_RC(crew_future_iter_next(it, &idx, 0), CREW_ETIMEDOUT);
    ASSERT_RC(crew_event_set(&c.go), 0);
    int count[N] = {0};
    for (size_t k = 0; k < N; k++) {
        idx = SIZE_MAX;
        ASSERT_RC(crew_future_iter_next(it, &idx, LONG_WAIT), 0);
        assert_true(idx < N);
        count[idx]++;
    }
    for (size_t i = 0; i < N; i++) assert_int_equal(count[i], 1);
    ASSERT_RC(crew_future_iter_next(it, &idx, 0), CREW_EOF);
    th_join(th);
    ASSERT_RC(c.rc, 0);
    crew_future_iter_free(it); /* the last references go here */
    ASSERT_RC(crew_event_destroy(&c.go), 0);
    free(fs);
}

/* Freeing an iterator with futures still pending, then completing them (or
 * freeing them pending): no crash, no leak, callbacks as usual. */
static void test_iter_free_while_pending(void **state) {
    (void)state;
    enum { N = 4 };
    cb_log *log = log_new();
    cb_rec r[N];
    crew_future **fs = new_futures(N);
    for (int i = 0; i < N; i++) {
        r[i] = (cb_rec){log, i};
        ASSERT_RC(crew_future_add_done_callback(fs[i], log_cb, &r[i]), 0);
    }
    crew_future_iter *it = NULL;
    ASSERT_RC(crew_future_iter_start(&it, fs, N), 0);
    finish_with(fs[1], 1);
    size_t idx = SIZE_MAX;
    ASSERT_RC(crew_future_iter_next(it, &idx, LONG_WAIT), 0);
    assert_int_equal(idx, 1);
    finish_with(fs[3], 3); /* complete, never fetched */
    crew_future_iter_free(it);

    ASSERT_RC(crew_future_cancel(fs[0]), 0);
    finish_with(fs[2], 2);
    assert_int_equal(atomic_load(&log->n), 4);
    triple got;
    ASSERT_RC(crew_future_get(fs[2], &got, 0), 0);
    ASSERT_TRIPLE(got, triple_of(2));
    /* A second iterator over the same, now complete, futures. */
    ASSERT_RC(crew_future_iter_start(&it, fs, N), 0);
    int count[N] = {0};
    for (int k = 0; k < N; k++) {
        ASSERT_RC(crew_future_iter_next(it, &idx, 0), 0);
        assert_true(idx < N);
        count[idx]++;
    }
    for (int i = 0; i < N; i++) assert_int_equal(count[i], 1);
    ASSERT_RC(crew_future_iter_next(it, &idx, 0), CREW_EOF);
    crew_future_iter_free(it);
    free_futures(fs, N);

    /* An iterator freed before any completion, over futures freed pending. */
    fs = new_futures(N);
    ASSERT_RC(crew_future_iter_start(&it, fs, N), 0);
    crew_future_iter_free(it);
    free_futures(fs, N);
    free(log);
}

/* An iterator freed while another thread completes its futures. */
static void test_iter_free_during_completion(void **state) {
    (void)state;
    enum { N = 6 };
    long rounds = test_scaled(300);
    for (long r = 0; r < rounds; r++) {
        crew_future **fs = new_futures(N);
        crew_future *refs[N];
        for (size_t i = 0; i < N; i++) refs[i] = crew_future_ref(fs[i]);
        crew_future_iter *it = NULL;
        ASSERT_RC(crew_future_iter_start(&it, fs, N), 0);
        completer_all c = {.fs = refs, .n = N, .rc = 12345};
        ASSERT_RC(crew_event_init(&c.go, 0), 0);
        pthread_t th;
        th_start(&th, complete_all_and_drop, &c);
        ASSERT_RC(crew_event_set(&c.go), 0);
        size_t idx = SIZE_MAX;
        ASSERT_RC(crew_future_iter_next(it, &idx, LONG_WAIT), 0);
        assert_true(idx < N);
        crew_future_iter_free(it);
        free_futures(fs, N);
        th_join(th);
        ASSERT_RC(c.rc, 0);
        ASSERT_RC(crew_event_destroy(&c.go), 0);
    }
}

/* ============================================================== stress */

/* Eight threads complete many futures (some with errors; some are cancelled
 * first by a cancelling thread) while others wait for chunks with every
 * mode, iterate over halves with as_completed, get single ones, and add
 * callbacks late. Everything is accounted for. */
typedef struct stress {
    size_t n;
    crew_future **fs;
    crew_event go;
    _Atomic size_t next;           /* the next index a completer takes */
    _Atomic int *cb_early;         /* per future: callback added before the start */
    _Atomic int *cb_late;          /* per future: callback added during the run */
    _Atomic int *seen;             /* per future: times an iterator gave it */
    _Atomic long results, errors, skipped; /* completers' outcomes */
    _Atomic long cancel_ok, cancel_busy;
    _Atomic long anomalies;        /* anything off the contract */
    _Atomic long first_anomaly;    /* a line number, for the report */
    _Atomic long first_index;      /* and the future and code it was about */
    _Atomic int first_rc;
} stress;

typedef struct stress_thread {
    pthread_t th;
    stress *s;
    size_t lo, hi;                 /* a range, for waiters */
    int mode;
} stress_thread;

#define STRESS_CHUNK 100

static bool is_error_index(size_t i) { return i % 10 == 3; }
static bool is_cancel_index(size_t i) { return i % 10 == 7; }
static int error_of(size_t i) { return -1000 - (int)(i % 97); }

static void anomaly(stress *s, long line, long index, int rc) {
    if (atomic_fetch_add(&s->anomalies, 1) == 0) {
        atomic_store(&s->first_anomaly, line);
        atomic_store(&s->first_index, index);
        atomic_store(&s->first_rc, rc);
    }
}
#define ANOMALY(s) anomaly((s), __LINE__, -1, 0)
#define ANOMALY_AT(s, i, rc) anomaly((s), __LINE__, (long)(i), (rc))

static void count_cb(crew_future *f, void *arg) {
    (void)f;
    atomic_fetch_add((_Atomic int *)arg, 1);
}

/* The outcome of future i agrees with what was done to it. */
static void check_outcome(stress *s, size_t i) {
    triple got;
    int rc = crew_future_get(s->fs[i], &got, 0);
    if (!crew_future_done(s->fs[i])) ANOMALY_AT(s, i, rc);
    if (is_error_index(i)) {
        if (rc != error_of(i)) ANOMALY_AT(s, i, rc);
    } else if (rc == CREW_ECANCELED) {
        if (!is_cancel_index(i) || !crew_future_cancelled(s->fs[i])) ANOMALY_AT(s, i, rc);
    } else {
        triple want = triple_of((long)i);
        if (rc != 0 || !triple_eq(&got, &want) || crew_future_cancelled(s->fs[i]))
            ANOMALY_AT(s, i, rc);
    }
}

static void *stress_completer(void *arg) {
    stress_thread *t = arg;
    stress *s = t->s;
    if (crew_event_wait(&s->go, LONG_WAIT) != 0) ANOMALY(s);
    for (;;) {
        size_t i = atomic_fetch_add(&s->next, 1);
        if (i >= s->n) break;
        int rc = crew_future_set_running(s->fs[i]);
        if (rc == CREW_ECANCELED) {
            if (!is_cancel_index(i)) ANOMALY_AT(s, i, rc);
            atomic_fetch_add(&s->skipped, 1);
            continue;
        }
        if (rc != 0) {
            ANOMALY_AT(s, i, rc);
            continue;
        }
        if (is_error_index(i)) {
            rc = crew_future_set_error(s->fs[i], error_of(i));
            if (rc != 0) ANOMALY_AT(s, i, rc);
            atomic_fetch_add(&s->errors, 1);
        } else {
            triple v = triple_of((long)i);
            rc = crew_future_set_result(s->fs[i], &v);
            if (rc != 0) ANOMALY_AT(s, i, rc);
            atomic_fetch_add(&s->results, 1);
        }
    }
    return NULL;
}

static void *stress_canceller(void *arg) {
    stress_thread *t = arg;
    stress *s = t->s;
    if (crew_event_wait(&s->go, LONG_WAIT) != 0) ANOMALY(s);
    for (size_t i = 7; i < s->n; i += 10) {
        int rc = crew_future_cancel(s->fs[i]);
        if (rc == 0)
            atomic_fetch_add(&s->cancel_ok, 1);
        else if (rc == CREW_EBUSY)
            atomic_fetch_add(&s->cancel_busy, 1);
        else
            ANOMALY_AT(s, i, rc);
    }
    return NULL;
}

static void *stress_late_callbacks(void *arg) {
    stress_thread *t = arg;
    stress *s = t->s;
    if (crew_event_wait(&s->go, LONG_WAIT) != 0) ANOMALY(s);
    for (size_t i = 0; i < s->n; i++)
        if (crew_future_add_done_callback(s->fs[i], count_cb, &s->cb_late[i]) != 0) ANOMALY(s);
    return NULL;
}

static void *stress_iterator(void *arg) {
    stress_thread *t = arg;
    stress *s = t->s;
    crew_future_iter *it = NULL;
    if (crew_future_iter_start(&it, s->fs + t->lo, t->hi - t->lo) != 0) {
        ANOMALY(s);
        return NULL;
    }
    if (crew_event_wait(&s->go, LONG_WAIT) != 0) ANOMALY(s);
    for (size_t k = t->lo; k < t->hi; k++) {
        size_t idx = SIZE_MAX;
        int rc = crew_future_iter_next(it, &idx, LONG_WAIT);
        if (rc != 0 || idx >= t->hi - t->lo) {
            ANOMALY_AT(s, idx, rc);
            break;
        }
        atomic_fetch_add(&s->seen[t->lo + idx], 1);
        check_outcome(s, t->lo + idx);
    }
    size_t idx;
    if (crew_future_iter_next(it, &idx, 0) != CREW_EOF) ANOMALY(s);
    crew_future_iter_free(it);
    return NULL;
}

static void *stress_waiter(void *arg) {
    stress_thread *t = arg;
    stress *s = t->s;
    if (crew_event_wait(&s->go, LONG_WAIT) != 0) ANOMALY(s);
    for (size_t lo = 0; lo < s->n; lo += STRESS_CHUNK) {
        size_t len = s->n - lo < STRESS_CHUNK ? s->n - lo : STRESS_CHUNK;
        crew_future *const *chunk = s->fs + lo;
        int rc = crew_future_wait(chunk, len, (crew_future_wait_mode)t->mode, LONG_WAIT);
        if (rc < 1 || (size_t)rc > len) {
            ANOMALY_AT(s, lo, rc);
            continue;
        }
        size_t done = 0;
        bool failed = false;
        for (size_t i = 0; i < len; i++) {
            if (!crew_future_done(chunk[i])) continue;
            done++;
            int grc = crew_future_get(chunk[i], NULL, 0);
            if (grc == CREW_ETIMEDOUT) ANOMALY_AT(s, lo + i, grc); /* done: get has it */
            if (grc < 0 && grc != CREW_ECANCELED) failed = true;
        }
        if (done < (size_t)rc) ANOMALY_AT(s, lo, rc); /* completion only moves forward */
        if (t->mode == CREW_ALL_COMPLETED && (size_t)rc != len) ANOMALY_AT(s, lo, rc);
        if (t->mode == CREW_FIRST_EXCEPTION && (size_t)rc != len && !failed)
            ANOMALY_AT(s, lo, rc);
    }
    return NULL;
}

static void *stress_getter(void *arg) {
    stress_thread *t = arg;
    stress *s = t->s;
    if (crew_event_wait(&s->go, LONG_WAIT) != 0) ANOMALY(s);
    for (size_t i = t->lo; i < s->n; i += 37) {
        int rc = crew_future_get(s->fs[i], NULL, LONG_WAIT);
        if (rc == CREW_ETIMEDOUT) ANOMALY_AT(s, i, rc);
        check_outcome(s, i);
    }
    return NULL;
}

static void test_stress(void **state) {
    (void)state;
    stress *s = calloc(1, sizeof *s);
    assert_non_null(s);
    s->n = (size_t)test_scaled(10000);
    s->fs = new_futures(s->n);
    s->cb_early = calloc(s->n, sizeof *s->cb_early);
    s->cb_late = calloc(s->n, sizeof *s->cb_late);
    s->seen = calloc(s->n, sizeof *s->seen);
    assert_non_null(s->cb_early);
    assert_non_null(s->cb_late);
    assert_non_null(s->seen);
    ASSERT_RC(crew_event_init(&s->go, 0), 0);
    for (size_t i = 0; i < s->n; i++)
        ASSERT_RC(crew_future_add_done_callback(s->fs[i], count_cb, &s->cb_early[i]), 0);

    enum { COMPLETERS = 8 };
    stress_thread th[COMPLETERS + 8];
    size_t nt = 0;
    for (int i = 0; i < COMPLETERS; i++) th[nt++] = (stress_thread){.s = s};
    size_t first_other = nt;
    th[nt++] = (stress_thread){.s = s};                               /* canceller */
    th[nt++] = (stress_thread){.s = s};                               /* late callbacks */
    th[nt++] = (stress_thread){.s = s, .lo = 0, .hi = s->n / 2};     /* iterator */
    th[nt++] = (stress_thread){.s = s, .lo = s->n / 2, .hi = s->n};  /* iterator */
    for (int m = 0; m < 3; m++) th[nt++] = (stress_thread){.s = s, .mode = m}; /* waiters */
    th[nt++] = (stress_thread){.s = s, .lo = 5};                      /* getter */

    for (size_t i = 0; i < COMPLETERS; i++) th_start(&th[i].th, stress_completer, &th[i]);
    th_start(&th[first_other].th, stress_canceller, &th[first_other]);
    th_start(&th[first_other + 1].th, stress_late_callbacks, &th[first_other + 1]);
    th_start(&th[first_other + 2].th, stress_iterator, &th[first_other + 2]);
    th_start(&th[first_other + 3].th, stress_iterator, &th[first_other + 3]);
    for (size_t i = first_other + 4; i < first_other + 7; i++)
        th_start(&th[i].th, stress_waiter, &th[i]);
    th_start(&th[first_other + 7].th, stress_getter, &th[first_other + 7]);
    ASSERT_RC(crew_event_set(&s->go), 0);
    for (size_t i = 0; i < nt; i++) th_join(th[i].th);

    if (atomic_load(&s->anomalies) != 0)
        fail_msg("%ld anomalies; the first at line %ld, future %ld, code %d (%s)",
                 atomic_load(&s->anomalies), atomic_load(&s->first_anomaly),
                 atomic_load(&s->first_index), atomic_load(&s->first_rc),
                 crew_err_name(atomic_load(&s->first_rc)));
    long n = (long)s->n, cancel_targets = 0, error_targets = 0;
    for (size_t i = 0; i < s->n; i++) {
        cancel_targets += is_cancel_index(i);
        error_targets += is_error_index(i);
    }
    assert_int_equal(atomic_load(&s->results) + atomic_load(&s->errors) + atomic_load(&s->skipped),
                     n);
    assert_int_equal(atomic_load(&s->errors), error_targets);
    assert_int_equal(atomic_load(&s->cancel_ok) + atomic_load(&s->cancel_busy), cancel_targets);
    assert_int_equal(atomic_load(&s->cancel_ok), atomic_load(&s->skipped));
    long cancelled = 0;
    for (size_t i = 0; i < s->n; i++) {
        if (atomic_load(&s->cb_early[i]) != 1 || atomic_load(&s->cb_late[i]) != 1 ||
            atomic_load(&s->seen[i]) != 1)
            fail_msg("future %zu: early callback ran %d times, late %d, iterators gave it %d",
                     i, atomic_load(&s->cb_early[i]), atomic_load(&s->cb_late[i]),
                     atomic_load(&s->seen[i]));
        check_outcome(s, i);
        cancelled += crew_future_cancelled(s->fs[i]);
    }
    assert_int_equal(atomic_load(&s->anomalies), 0);
    assert_int_equal(cancelled, atomic_load(&s->cancel_ok));
    ASSERT_RC(crew_future_wait(s->fs, s->n, CREW_ALL_COMPLETED, 0), (int)s->n);

    ASSERT_RC(crew_event_destroy(&s->go), 0);
    free_futures(s->fs, s->n);
    free((void *)s->cb_early);
    free((void *)s->cb_late);
    free((void *)s->seen);
    free(s);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_create_free),
        cmocka_unit_test(test_ref_keeps_alive),
        cmocka_unit_test(test_ref_concurrent),
        cmocka_unit_test(test_ref_handoff),
        cmocka_unit_test(test_running_then_finished),
        cmocka_unit_test(test_pending_then_cancelled),
        cmocka_unit_test(test_complete_without_running),
        cmocka_unit_test(test_set_error),
        cmocka_unit_test(test_result_sizes),
        cmocka_unit_test(test_get_timeouts),
        cmocka_unit_test(test_get_woken_by_result),
        cmocka_unit_test(test_get_woken_by_error),
        cmocka_unit_test(test_get_woken_by_cancel),
        cmocka_unit_test(test_get_in_main_woken),
        cmocka_unit_test(test_many_waiters_all_wake),
        cmocka_unit_test(test_callbacks_order_once),
        cmocka_unit_test(test_callbacks_on_cancel_and_error),
        cmocka_unit_test(test_callbacks_many),
        cmocka_unit_test(test_callback_invalid),
        cmocka_unit_test(test_callback_uses_future),
        cmocka_unit_test(test_callback_thread),
        cmocka_unit_test(test_wait_invalid),
        cmocka_unit_test(test_wait_already_complete),
        cmocka_unit_test(test_wait_timeouts),
        cmocka_unit_test(test_wait_all_completed_blocks),
        cmocka_unit_test(test_wait_first_completed_blocks),
        cmocka_unit_test(test_wait_first_exception_blocks),
        cmocka_unit_test(test_wait_completed_by_other_thread),
        cmocka_unit_test(test_wait_returns_during_completion),
        cmocka_unit_test(test_done_means_gettable),
        cmocka_unit_test(test_iter_invalid),
        cmocka_unit_test(test_iter_timeouts),
        cmocka_unit_test(test_iter_completion_order),
        cmocka_unit_test(test_iter_holds_references),
        cmocka_unit_test(test_iter_free_while_pending),
        cmocka_unit_test(test_iter_free_during_completion),
        cmocka_unit_test(test_stress),
    };
    return test_run_forked("test_future", tests, sizeof tests / sizeof tests[0]);
}
