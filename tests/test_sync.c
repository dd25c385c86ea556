/* Unit tests for the sync module: lock, rlock, semaphore, bounded semaphore,
 * event, condition and barrier, private and CREW_SHARED, between threads and
 * between forked processes, including a shared lock whose holder dies.
 *
 * The cases follow CPython's Lib/test/lock_tests.py where its behaviour
 * applies to C (timeouts, release by another thread, notify(n), wait_for,
 * barrier cycles, abort and reset), plus crew's own contract: error codes for
 * NULL, destroyed and zeroed objects, CREW_EOWNERDEAD, the bounds of a
 * semaphore.
 *
 * Helper threads are plain pthreads: sync comes before thread in the module
 * order, so its test does not lean on crew_thread. Helpers never call
 * cmocka's assertions; they record what happened and the main thread checks
 * it after joining them. Forked children report through their exit status.
 * Each test runs in a process of its own (see main), and forks its children
 * before it starts any thread, or after all of them have been joined, so
 * ThreadSanitizer accepts every fork.
 *
 * Nothing here sleeps to wait for another thread. Where a test needs a
 * helper to be asleep inside a call (destroying a waited-on object, set then
 * clear) it watches the helper's kernel state in /proc until it sleeps in
 * futex(); elsewhere it polls a counter with a generous deadline.
 */
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
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "crew/clock.h"
#include "crew/error.h"
#include "crew/sync.h"

/* How long one test process may run before the runner kills it. */
#define TEST_PROCESS_LIMIT 120.0
#include "test_harness.h"

/* How long it looks for a helper asleep in futex() where that only makes
 * the test take the sleeping path more often (the implementation may poll
 * instead, as the shared lock does under ThreadSanitizer). */
#define SOFT_SETTLE 1.0
/* How long a negative check (nobody else wakes) keeps looking. */
#define GRACE 0.1

/* --------------------------------------------------------------- helpers */

/* A helper thread making one blocking call. */
typedef struct waiter waiter;
typedef int (*waiter_op)(waiter *w);
struct waiter {
    pthread_t th;
    waiter_op op;
    void *obj;
    double timeout;
    _Atomic int tid;           /* set before the call */
    _Atomic bool done;         /* set after it */
    int rc;                    /* its result; read after the join */
    double elapsed;            /* its duration */
    int self_tid;              /* for ops that check ownership */
};

static void *waiter_main(void *p) {
    waiter *w = p;
    w->self_tid = my_tid();
    atomic_store(&w->tid, w->self_tid);
    double t0 = test_now();
    w->rc = w->op(w);
    w->elapsed = test_now() - t0;
    atomic_store(&w->done, true);
    return NULL;
}

static void waiter_start(waiter *w, waiter_op op, void *obj, double timeout) {
    w->op = op;
    w->obj = obj;
    w->timeout = timeout;
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

/* Wait until w sleeps inside its call; false if it returned or never slept
 * within `seconds`. */
static bool waiter_blocked(waiter *w, double seconds) {
    return thread_blocked(&w->tid, &w->done, seconds);
}

/* Tests that run once per flag value: name(unsigned flags). */
#define FLAG_VARIANTS(name)                                                     \
    static void name##_private(void **state) {                                  \
        (void)state;                                                            \
        name(0);                                                                \
    }                                                                           \
    static void name##_shared(void **state) {                                   \
        (void)state;                                                            \
        name(CREW_SHARED);                                                      \
    }
#define BOTH(name) cmocka_unit_test(name##_private), cmocka_unit_test(name##_shared)

/* ================================================================== lock */

static int op_lock_acquire(waiter *w) { return crew_lock_acquire(w->obj, w->timeout); }
static int op_lock_release(waiter *w) { return crew_lock_release(w->obj); }
static int op_lock_acquire_release(waiter *w) {
    int rc = crew_lock_acquire(w->obj, w->timeout);
    return rc != 0 ? rc : crew_lock_release(w->obj);
}

static void lock_basic(unsigned flags) {
    crew_lock l;
    ASSERT_RC(crew_lock_init(&l, flags), 0);
    assert_false(crew_lock_locked(&l));
    ASSERT_RC(crew_lock_acquire(&l, CREW_FOREVER), 0);
    assert_true(crew_lock_locked(&l));
    ASSERT_RC(crew_lock_release(&l), 0);
    assert_false(crew_lock_locked(&l));

    /* Try, timed and "huge = forever" acquires all succeed at once when free. */
    ASSERT_RC(crew_lock_acquire(&l, 0), 0);
    assert_true(crew_lock_locked(&l));
    ASSERT_RC(crew_lock_release(&l), 0);
    ASSERT_RC(crew_lock_acquire(&l, 5.0), 0);
    ASSERT_RC(crew_lock_release(&l), 0);
    ASSERT_RC(crew_lock_acquire(&l, 1e300), 0);
    ASSERT_RC(crew_lock_release(&l), 0);

    /* Releasing an unlocked lock is an error and changes nothing. */
    ASSERT_RC(crew_lock_release(&l), CREW_EPERM);
    assert_false(crew_lock_locked(&l));
    ASSERT_RC(crew_lock_acquire(&l, 0), 0);
    ASSERT_RC(crew_lock_release(&l), 0);
    ASSERT_RC(crew_lock_destroy(&l), 0);
}
FLAG_VARIANTS(lock_basic)

static void lock_try_and_timeout(unsigned flags) {
    crew_lock l;
    waiter w;
    ASSERT_RC(crew_lock_init(&l, flags), 0);
    ASSERT_RC(crew_lock_acquire(&l, CREW_FOREVER), 0);

    waiter_start(&w, op_lock_acquire, &l, 0);
    ASSERT_RC(waiter_join(&w), CREW_EBUSY);
    assert_true(w.elapsed < TIME_SLACK);

    waiter_start(&w, op_lock_acquire, &l, SHORT);
    ASSERT_RC(waiter_join(&w), CREW_ETIMEDOUT);
    ASSERT_ELAPSED(w.elapsed, SHORT);

    /* Any positive timeout, however small, expires as a timeout. */
    waiter_start(&w, op_lock_acquire, &l, 1e-6);
    ASSERT_RC(waiter_join(&w), CREW_ETIMEDOUT);

    if (!(flags & CREW_SHARED)) {
        /* As in Python, the holder's own acquire waits for a release (here
         * until its timeout) and its try fails. */
        ASSERT_RC(crew_lock_acquire(&l, 0), CREW_EBUSY);
        double t0 = test_now();
        ASSERT_RC(crew_lock_acquire(&l, SHORT), CREW_ETIMEDOUT);
        ASSERT_ELAPSED(test_now() - t0, SHORT);
    } else {
        /* Only the holder can release a shared lock, so its own acquire
         * could never succeed: CREW_EDEADLK at once, whatever the timeout. */
        ASSERT_RC(crew_lock_acquire(&l, 0), CREW_EDEADLK);
        ASSERT_RC(crew_lock_acquire(&l, SHORT), CREW_EDEADLK);
        ASSERT_RC(crew_lock_acquire(&l, CREW_FOREVER), CREW_EDEADLK);
    }

    /* Failed acquires left the lock as it was: held, and free after one
     * release (CPython's test_state_after_timeout). */
    assert_true(crew_lock_locked(&l));
    ASSERT_RC(crew_lock_release(&l), 0);
    assert_false(crew_lock_locked(&l));
    waiter_start(&w, op_lock_acquire_release, &l, 0);
    ASSERT_RC(waiter_join(&w), 0);
    assert_false(crew_lock_locked(&l));
    ASSERT_RC(crew_lock_destroy(&l), 0);
}
FLAG_VARIANTS(lock_try_and_timeout)

/* A release wakes a thread blocked in acquire, forever or timed. */
static void lock_release_wakes_waiter(unsigned flags) {
    crew_lock l;
    waiter w;
    ASSERT_RC(crew_lock_init(&l, flags), 0);
    const double timeouts[] = {CREW_FOREVER, LONG_WAIT};
    for (size_t i = 0; i < 2; i++) {
        ASSERT_RC(crew_lock_acquire(&l, CREW_FOREVER), 0);
        waiter_start(&w, op_lock_acquire_release, &l, timeouts[i]);
        /* Not required, but makes the waiter take the sleeping path. */
        (void)waiter_blocked(&w, SOFT_SETTLE);
        bool returned_early = atomic_load(&w.done);
        ASSERT_RC(crew_lock_release(&l), 0);
        ASSERT_RC(waiter_join(&w), 0);
        assert_false(returned_early);
        assert_false(crew_lock_locked(&l));
    }
    ASSERT_RC(crew_lock_destroy(&l), 0);
}
FLAG_VARIANTS(lock_release_wakes_waiter)

/* A private lock may be released by a thread that does not hold it (Python
 * semantics: a Lock is a binary semaphore); a shared one only by its holder. */
static void lock_release_by_other_thread(unsigned flags) {
    crew_lock l;
    waiter w;
    ASSERT_RC(crew_lock_init(&l, flags), 0);
    ASSERT_RC(crew_lock_acquire(&l, CREW_FOREVER), 0);
    waiter_start(&w, op_lock_release, &l, 0);
    int rc = waiter_join(&w);
    if (flags & CREW_SHARED) {
        ASSERT_RC(rc, CREW_EPERM);
        assert_true(crew_lock_locked(&l));
        ASSERT_RC(crew_lock_release(&l), 0);
    } else {
        ASSERT_RC(rc, 0);
        assert_false(crew_lock_locked(&l));
        /* And the other way round: acquired by a helper, released here. */
        waiter_start(&w, op_lock_acquire, &l, CREW_FOREVER);
        ASSERT_RC(waiter_join(&w), 0);
        assert_true(crew_lock_locked(&l));
        ASSERT_RC(crew_lock_release(&l), 0);
        assert_false(crew_lock_locked(&l));
        ASSERT_RC(crew_lock_acquire(&l, 0), 0);
        ASSERT_RC(crew_lock_release(&l), 0);
    }
    ASSERT_RC(crew_lock_destroy(&l), 0);
}
FLAG_VARIANTS(lock_release_by_other_thread)

static void lock_destroy_busy(unsigned flags) {
    crew_lock l;
    ASSERT_RC(crew_lock_init(&l, flags), 0);
    ASSERT_RC(crew_lock_acquire(&l, CREW_FOREVER), 0);
    ASSERT_RC(crew_lock_destroy(&l), CREW_EBUSY);
    /* Left intact: still held, still usable. */
    assert_true(crew_lock_locked(&l));
    waiter w;
    waiter_start(&w, op_lock_acquire, &l, 0);
    ASSERT_RC(waiter_join(&w), CREW_EBUSY);
    ASSERT_RC(crew_lock_release(&l), 0);
    ASSERT_RC(crew_lock_destroy(&l), 0);
}
FLAG_VARIANTS(lock_destroy_busy)

static void test_lock_invalid(void **state) {
    (void)state;
    crew_lock l;
    ASSERT_RC(crew_lock_init(NULL, 0), CREW_EINVAL);
    ASSERT_RC(crew_lock_init(&l, 0x80), CREW_EINVAL);
    ASSERT_RC(crew_lock_init(&l, CREW_SHARED | 2u), CREW_EINVAL);
    ASSERT_RC(crew_lock_destroy(NULL), CREW_EINVAL);
    ASSERT_RC(crew_lock_acquire(NULL, 0), CREW_EINVAL);
    ASSERT_RC(crew_lock_acquire(NULL, CREW_FOREVER), CREW_EINVAL);
    ASSERT_RC(crew_lock_release(NULL), CREW_EINVAL);
    assert_false(crew_lock_locked(NULL));

    for (unsigned flags = 0; flags <= CREW_SHARED; flags++) {
        ASSERT_RC(crew_lock_init(&l, flags), 0);
        /* Bad timeouts are refused before anything else, free or held. */
        ASSERT_RC(crew_lock_acquire(&l, -1.0), CREW_EINVAL);
        ASSERT_RC(crew_lock_acquire(&l, -1e-9), CREW_EINVAL);
        ASSERT_RC(crew_lock_acquire(&l, NAN), CREW_EINVAL);
        ASSERT_RC(crew_lock_acquire(&l, -INFINITY), CREW_EINVAL);
        assert_false(crew_lock_locked(&l));
        ASSERT_RC(crew_lock_acquire(&l, 0), 0);
        ASSERT_RC(crew_lock_acquire(&l, -1.0), CREW_EINVAL);
        ASSERT_RC(crew_lock_acquire(&l, NAN), CREW_EINVAL);
        assert_true(crew_lock_locked(&l));
        ASSERT_RC(crew_lock_release(&l), 0);
        ASSERT_RC(crew_lock_destroy(&l), 0);

        /* A destroyed lock is recognised. */
        ASSERT_RC(crew_lock_acquire(&l, 0), CREW_EINVAL);
        ASSERT_RC(crew_lock_acquire(&l, SHORT), CREW_EINVAL);
        ASSERT_RC(crew_lock_release(&l), CREW_EINVAL);
        ASSERT_RC(crew_lock_destroy(&l), CREW_EINVAL);
        assert_false(crew_lock_locked(&l));
    }

    /* So is one never initialised: zeroed, or garbage. */
    memset(&l, 0, sizeof l);
    ASSERT_RC(crew_lock_acquire(&l, 0), CREW_EINVAL);
    ASSERT_RC(crew_lock_acquire(&l, CREW_FOREVER), CREW_EINVAL);
    ASSERT_RC(crew_lock_release(&l), CREW_EINVAL);
    ASSERT_RC(crew_lock_destroy(&l), CREW_EINVAL);
    assert_false(crew_lock_locked(&l));
    memset(&l, 0xa5, sizeof l);
    ASSERT_RC(crew_lock_acquire(&l, 0), CREW_EINVAL);
    ASSERT_RC(crew_lock_release(&l), CREW_EINVAL);
    ASSERT_RC(crew_lock_destroy(&l), CREW_EINVAL);
}

/* Mutual exclusion: a plain counter incremented under the lock by several
 * threads, mixing forever, timed and try-spin acquires, comes out exact. */
typedef struct counter_arg {
    crew_lock *lock;
    crew_rlock *rlock;
    long *counter;
    long iters;
    int mode;
    int rc;
    pthread_t th;
} counter_arg;

static int counter_acquire(counter_arg *a) {
    int rc;
    switch (a->mode % 3) {
    case 0: return a->lock ? crew_lock_acquire(a->lock, CREW_FOREVER)
                           : crew_rlock_acquire(a->rlock, CREW_FOREVER);
    case 1: return a->lock ? crew_lock_acquire(a->lock, LONG_WAIT)
                           : crew_rlock_acquire(a->rlock, LONG_WAIT);
    default:
        while ((rc = a->lock ? crew_lock_acquire(a->lock, 0) : crew_rlock_acquire(a->rlock, 0)) ==
               CREW_EBUSY)
            sched_yield();
        return rc;
    }
}

static void *counter_main(void *p) {
    counter_arg *a = p;
    for (long i = 0; i < a->iters; i++) {
        int rc = counter_acquire(a);
        if (rc != 0) { a->rc = rc; return NULL; }
        if (a->rlock) {
            /* Re-enter once: the depth must come back to the same count. */
            rc = crew_rlock_acquire(a->rlock, 0);
            if (rc != 0) { a->rc = rc; return NULL; }
        }
        long v = *a->counter;
        *a->counter = v + 1;
        if (a->rlock) {
            rc = crew_rlock_release(a->rlock);
            if (rc == 0) rc = crew_rlock_release(a->rlock);
        } else {
            rc = crew_lock_release(a->lock);
        }
        if (rc != 0) { a->rc = rc; return NULL; }
    }
    return NULL;
}

#define COUNTER_THREADS 4

static void run_counter(crew_lock *lock, crew_rlock *rlock, long iters) {
    long counter = 0;
    counter_arg a[COUNTER_THREADS];
    for (int i = 0; i < COUNTER_THREADS; i++) {
        a[i] = (counter_arg){.lock = lock, .rlock = rlock, .counter = &counter,
                             .iters = iters, .mode = i};
        th_start(&a[i].th, counter_main, &a[i]);
    }
    for (int i = 0; i < COUNTER_THREADS; i++) th_join(a[i].th);
    for (int i = 0; i < COUNTER_THREADS; i++) ASSERT_RC(a[i].rc, 0);
    assert_int_equal(counter, COUNTER_THREADS * iters);
}

static void lock_mutual_exclusion(unsigned flags) {
    crew_lock l;
    ASSERT_RC(crew_lock_init(&l, flags), 0);
    run_counter(&l, NULL, test_scaled(20000));
    assert_false(crew_lock_locked(&l));
    ASSERT_RC(crew_lock_destroy(&l), 0);
}
FLAG_VARIANTS(lock_mutual_exclusion)

/* ================================================================= rlock */

static int op_rlock_acquire(waiter *w) { return crew_rlock_acquire(w->obj, w->timeout); }

static void rlock_recursion(unsigned flags) {
    crew_rlock r;
    ASSERT_RC(crew_rlock_init(&r, flags), 0);
    assert_false(crew_rlock_owned(&r));
    ASSERT_RC(crew_rlock_acquire(&r, CREW_FOREVER), 0);
    assert_true(crew_rlock_owned(&r));
    ASSERT_RC(crew_rlock_acquire(&r, 0), 0);
    ASSERT_RC(crew_rlock_acquire(&r, SHORT), 0);
    ASSERT_RC(crew_rlock_release(&r), 0);
    assert_true(crew_rlock_owned(&r));
    ASSERT_RC(crew_rlock_release(&r), 0);
    assert_true(crew_rlock_owned(&r));
    ASSERT_RC(crew_rlock_release(&r), 0);
    assert_false(crew_rlock_owned(&r));
    ASSERT_RC(crew_rlock_release(&r), CREW_EPERM);
    assert_false(crew_rlock_owned(&r));

    /* Deep recursion unwinds exactly. */
    const int depth = 1000;
    for (int i = 0; i < depth; i++) ASSERT_RC(crew_rlock_acquire(&r, 0), 0);
    for (int i = 0; i < depth; i++) {
        assert_true(crew_rlock_owned(&r));
        ASSERT_RC(crew_rlock_release(&r), 0);
    }
    assert_false(crew_rlock_owned(&r));
    ASSERT_RC(crew_rlock_release(&r), CREW_EPERM);
    ASSERT_RC(crew_rlock_destroy(&r), 0);
}
FLAG_VARIANTS(rlock_recursion)

/* What another thread sees of a held rlock. */
typedef struct rlock_probe {
    crew_rlock *r;
    bool owned;
    int try_rc, timed_rc, release_rc;
    double timed_elapsed;
} rlock_probe;

static void *rlock_probe_main(void *p) {
    rlock_probe *a = p;
    a->owned = crew_rlock_owned(a->r);
    a->try_rc = crew_rlock_acquire(a->r, 0);
    double t0 = test_now();
    a->timed_rc = crew_rlock_acquire(a->r, SHORT);
    a->timed_elapsed = test_now() - t0;
    a->release_rc = crew_rlock_release(a->r);
    return NULL;
}

/* A helper that holds the rlock until told to let go. */
typedef struct rlock_holder {
    crew_rlock *r;
    _Atomic int phase;         /* 1: holding, 2: may release */
    int acq_rc, rel_rc;
    bool owned;
} rlock_holder;

static void *rlock_holder_main(void *p) {
    rlock_holder *h = p;
    h->acq_rc = crew_rlock_acquire(h->r, CREW_FOREVER);
    h->owned = crew_rlock_owned(h->r);
    atomic_store(&h->phase, 1);
    (void)TEST_WAIT_UNTIL(atomic_load(&h->phase) == 2, 60.0);
    h->rel_rc = crew_rlock_release(h->r);
    return NULL;
}

static void rlock_other_thread(unsigned flags) {
    crew_rlock r;
    ASSERT_RC(crew_rlock_init(&r, flags), 0);
    ASSERT_RC(crew_rlock_acquire(&r, CREW_FOREVER), 0);
    ASSERT_RC(crew_rlock_acquire(&r, CREW_FOREVER), 0);

    rlock_probe pr = {.r = &r};
    pthread_t t;
    th_start(&t, rlock_probe_main, &pr);
    th_join(t);
    assert_false(pr.owned);
    ASSERT_RC(pr.try_rc, CREW_EBUSY);
    ASSERT_RC(pr.timed_rc, CREW_ETIMEDOUT);
    ASSERT_ELAPSED(pr.timed_elapsed, SHORT);
    ASSERT_RC(pr.release_rc, CREW_EPERM);

    /* The foreign release changed nothing: still two levels here. */
    assert_true(crew_rlock_owned(&r));
    ASSERT_RC(crew_rlock_release(&r), 0);
    assert_true(crew_rlock_owned(&r));
    ASSERT_RC(crew_rlock_release(&r), 0);
    assert_false(crew_rlock_owned(&r));
    ASSERT_RC(crew_rlock_release(&r), CREW_EPERM);

    /* Now held by a helper: this thread neither owns nor can take or free it. */
    rlock_holder h = {.r = &r};
    atomic_init(&h.phase, 0);
    th_start(&t, rlock_holder_main, &h);
    bool holding = TEST_WAIT_UNTIL(atomic_load(&h.phase) == 1, SETTLE);
    bool owned_here = crew_rlock_owned(&r);
    int try_rc = crew_rlock_acquire(&r, 0);
    int rel_rc = crew_rlock_release(&r);
    atomic_store(&h.phase, 2);
    th_join(t);
    assert_true(holding);
    ASSERT_RC(h.acq_rc, 0);
    assert_true(h.owned);
    assert_false(owned_here);
    ASSERT_RC(try_rc, CREW_EBUSY);
    ASSERT_RC(rel_rc, CREW_EPERM);
    ASSERT_RC(h.rel_rc, 0);
    /* The helper's single release freed it. */
    ASSERT_RC(crew_rlock_acquire(&r, 0), 0);
    ASSERT_RC(crew_rlock_release(&r), 0);
    ASSERT_RC(crew_rlock_destroy(&r), 0);
}
FLAG_VARIANTS(rlock_other_thread)

static int op_rlock_acquire_check_release(waiter *w) {
    int rc = crew_rlock_acquire(w->obj, w->timeout);
    if (rc != 0) return rc;
    if (!crew_rlock_owned(w->obj)) return -1;
    return crew_rlock_release(w->obj);
}

/* A blocked acquirer gets the rlock only when the last level is released. */
static void rlock_blocked_waiter(unsigned flags) {
    crew_rlock r;
    waiter w;
    ASSERT_RC(crew_rlock_init(&r, flags), 0);
    ASSERT_RC(crew_rlock_acquire(&r, CREW_FOREVER), 0);
    ASSERT_RC(crew_rlock_acquire(&r, CREW_FOREVER), 0);
    waiter_start(&w, op_rlock_acquire_check_release, &r, LONG_WAIT);
    (void)waiter_blocked(&w, SOFT_SETTLE);
    ASSERT_RC(crew_rlock_release(&r), 0);
    /* One level is still held: the waiter must still be waiting. */
    bool early = TEST_WAIT_UNTIL(atomic_load(&w.done), GRACE);
    ASSERT_RC(crew_rlock_release(&r), 0);
    ASSERT_RC(waiter_join(&w), 0);
    assert_false(early);
    assert_false(crew_rlock_owned(&r));
    ASSERT_RC(crew_rlock_destroy(&r), 0);
}
FLAG_VARIANTS(rlock_blocked_waiter)

static void rlock_mutual_exclusion(unsigned flags) {
    crew_rlock r;
    ASSERT_RC(crew_rlock_init(&r, flags), 0);
    run_counter(NULL, &r, test_scaled(10000));
    assert_false(crew_rlock_owned(&r));
    ASSERT_RC(crew_rlock_acquire(&r, 0), 0);
    ASSERT_RC(crew_rlock_release(&r), 0);
    ASSERT_RC(crew_rlock_destroy(&r), 0);
}
FLAG_VARIANTS(rlock_mutual_exclusion)

static void test_rlock_invalid(void **state) {
    (void)state;
    crew_rlock r;
    ASSERT_RC(crew_rlock_init(NULL, 0), CREW_EINVAL);
    ASSERT_RC(crew_rlock_init(&r, 0x80), CREW_EINVAL);
    ASSERT_RC(crew_rlock_destroy(NULL), CREW_EINVAL);
    ASSERT_RC(crew_rlock_acquire(NULL, 0), CREW_EINVAL);
    ASSERT_RC(crew_rlock_release(NULL), CREW_EINVAL);
    assert_false(crew_rlock_owned(NULL));

    for (unsigned flags = 0; flags <= CREW_SHARED; flags++) {
        ASSERT_RC(crew_rlock_init(&r, flags), 0);
        ASSERT_RC(crew_rlock_acquire(&r, -1.0), CREW_EINVAL);
        ASSERT_RC(crew_rlock_acquire(&r, NAN), CREW_EINVAL);
        assert_false(crew_rlock_owned(&r));
        ASSERT_RC(crew_rlock_acquire(&r, 0), 0);
        /* Even the holder's re-entry checks the timeout first. */
        ASSERT_RC(crew_rlock_acquire(&r, -1.0), CREW_EINVAL);
        ASSERT_RC(crew_rlock_acquire(&r, NAN), CREW_EINVAL);
        ASSERT_RC(crew_rlock_destroy(&r), CREW_EBUSY);
        assert_true(crew_rlock_owned(&r));
        /* One level only: the bad calls above added none. */
        ASSERT_RC(crew_rlock_release(&r), 0);
        ASSERT_RC(crew_rlock_release(&r), CREW_EPERM);
        ASSERT_RC(crew_rlock_destroy(&r), 0);

        ASSERT_RC(crew_rlock_acquire(&r, 0), CREW_EINVAL);
        ASSERT_RC(crew_rlock_release(&r), CREW_EINVAL);
        ASSERT_RC(crew_rlock_destroy(&r), CREW_EINVAL);
        assert_false(crew_rlock_owned(&r));
    }
    memset(&r, 0, sizeof r);
    ASSERT_RC(crew_rlock_acquire(&r, 0), CREW_EINVAL);
    ASSERT_RC(crew_rlock_acquire(&r, CREW_FOREVER), CREW_EINVAL);
    ASSERT_RC(crew_rlock_release(&r), CREW_EINVAL);
    ASSERT_RC(crew_rlock_destroy(&r), CREW_EINVAL);
    assert_false(crew_rlock_owned(&r));
}

/* ============================================================= semaphore */

static int op_sem_acquire(waiter *w) { return crew_sem_acquire(w->obj, w->timeout); }

static void sem_counts(unsigned flags) {
    crew_sem s;
    ASSERT_RC(crew_sem_init(&s, 3, flags), 0);
    ASSERT_RC(crew_sem_value(&s), 3);
    ASSERT_RC(crew_sem_acquire(&s, 0), 0);
    ASSERT_RC(crew_sem_acquire(&s, CREW_FOREVER), 0);
    ASSERT_RC(crew_sem_acquire(&s, 5.0), 0);
    ASSERT_RC(crew_sem_value(&s), 0);
    ASSERT_RC(crew_sem_acquire(&s, 0), CREW_EBUSY);
    double t0 = test_now();
    ASSERT_RC(crew_sem_acquire(&s, SHORT), CREW_ETIMEDOUT);
    ASSERT_ELAPSED(test_now() - t0, SHORT);
    ASSERT_RC(crew_sem_value(&s), 0);

    ASSERT_RC(crew_sem_release(&s, 1), 0);
    ASSERT_RC(crew_sem_value(&s), 1);
    ASSERT_RC(crew_sem_release(&s, 5), 0);
    ASSERT_RC(crew_sem_value(&s), 6);
    for (int i = 0; i < 6; i++) ASSERT_RC(crew_sem_acquire(&s, 0), 0);
    ASSERT_RC(crew_sem_acquire(&s, 0), CREW_EBUSY);
    ASSERT_RC(crew_sem_value(&s), 0);
    ASSERT_RC(crew_sem_destroy(&s), 0);

    ASSERT_RC(crew_sem_init(&s, 0, flags), 0);
    ASSERT_RC(crew_sem_value(&s), 0);
    ASSERT_RC(crew_sem_acquire(&s, 0), CREW_EBUSY);
    ASSERT_RC(crew_sem_destroy(&s), 0);
}
FLAG_VARIANTS(sem_counts)

static void sem_limits(unsigned flags) {
    crew_sem s;
    ASSERT_RC(crew_sem_init(&s, CREW_SEM_VALUE_MAX + 1u, flags), CREW_EINVAL);
    ASSERT_RC(crew_sem_init(&s, UINT_MAX, flags), CREW_EINVAL);
    ASSERT_RC(crew_sem_init_bounded(&s, CREW_SEM_VALUE_MAX + 1u, flags), CREW_EINVAL);

    ASSERT_RC(crew_sem_init(&s, CREW_SEM_VALUE_MAX, flags), 0);
    ASSERT_RC(crew_sem_value(&s), (int)CREW_SEM_VALUE_MAX);
    ASSERT_RC(crew_sem_release(&s, 1), CREW_EOVERFLOW);
    ASSERT_RC(crew_sem_value(&s), (int)CREW_SEM_VALUE_MAX);
    ASSERT_RC(crew_sem_acquire(&s, 0), 0);
    ASSERT_RC(crew_sem_release(&s, 2), CREW_EOVERFLOW);
    ASSERT_RC(crew_sem_release(&s, UINT_MAX), CREW_EOVERFLOW);
    ASSERT_RC(crew_sem_value(&s), (int)CREW_SEM_VALUE_MAX - 1);
    ASSERT_RC(crew_sem_release(&s, 1), 0);
    ASSERT_RC(crew_sem_value(&s), (int)CREW_SEM_VALUE_MAX);
    ASSERT_RC(crew_sem_destroy(&s), 0);

    ASSERT_RC(crew_sem_init(&s, 0, flags), 0);
    ASSERT_RC(crew_sem_release(&s, 0), CREW_EINVAL);
    ASSERT_RC(crew_sem_value(&s), 0);
    ASSERT_RC(crew_sem_release(&s, CREW_SEM_VALUE_MAX + 1u), CREW_EOVERFLOW);
    ASSERT_RC(crew_sem_value(&s), 0);
    ASSERT_RC(crew_sem_release(&s, CREW_SEM_VALUE_MAX), 0);
    ASSERT_RC(crew_sem_value(&s), (int)CREW_SEM_VALUE_MAX);
    ASSERT_RC(crew_sem_destroy(&s), 0);
}
FLAG_VARIANTS(sem_limits)

static void sem_bounded(unsigned flags) {
    crew_sem s;
    ASSERT_RC(crew_sem_init_bounded(&s, 2, flags), 0);
    ASSERT_RC(crew_sem_value(&s), 2);
    ASSERT_RC(crew_sem_release(&s, 1), CREW_EOVERFLOW);
    ASSERT_RC(crew_sem_value(&s), 2);
    ASSERT_RC(crew_sem_acquire(&s, 0), 0);
    ASSERT_RC(crew_sem_acquire(&s, 0), 0);
    ASSERT_RC(crew_sem_acquire(&s, 0), CREW_EBUSY);
    ASSERT_RC(crew_sem_release(&s, 3), CREW_EOVERFLOW);
    ASSERT_RC(crew_sem_value(&s), 0);
    ASSERT_RC(crew_sem_release(&s, 2), 0);
    ASSERT_RC(crew_sem_value(&s), 2);
    ASSERT_RC(crew_sem_acquire(&s, 0), 0);
    ASSERT_RC(crew_sem_release(&s, 1), 0);
    ASSERT_RC(crew_sem_release(&s, 1), CREW_EOVERFLOW);
    ASSERT_RC(crew_sem_value(&s), 2);
    ASSERT_RC(crew_sem_destroy(&s), 0);

    ASSERT_RC(crew_sem_init_bounded(&s, 0, flags), 0);
    ASSERT_RC(crew_sem_release(&s, 1), CREW_EOVERFLOW);
    ASSERT_RC(crew_sem_acquire(&s, 0), CREW_EBUSY);
    ASSERT_RC(crew_sem_value(&s), 0);
    ASSERT_RC(crew_sem_destroy(&s), 0);
}
FLAG_VARIANTS(sem_bounded)

/* release(n) wakes n blocked acquirers, no more (there are only n units),
 * and none is lost. */
#define SEM_WAITERS 5

static void sem_release_n_wakes(unsigned flags) {
    crew_sem s;
    waiter w[SEM_WAITERS];
    ASSERT_RC(crew_sem_init(&s, 0, flags), 0);
    for (int i = 0; i < SEM_WAITERS; i++) waiter_start(&w[i], op_sem_acquire, &s, LONG_WAIT);
    for (int i = 0; i < SEM_WAITERS; i++) (void)waiter_blocked(&w[i], SOFT_SETTLE);

#define SEM_DONE()                                                              \
    ({                                                                          \
        int n_ = 0;                                                             \
        for (int j_ = 0; j_ < SEM_WAITERS; j_++) n_ += atomic_load(&w[j_].done); \
        n_;                                                                     \
    })
    int early = SEM_DONE();
    ASSERT_RC(crew_sem_release(&s, 2), 0);
    bool two = TEST_WAIT_UNTIL(SEM_DONE() == 2, SETTLE);
    bool more = TEST_WAIT_UNTIL(SEM_DONE() > 2, GRACE);
    int value_after_two = crew_sem_value(&s);
    ASSERT_RC(crew_sem_release(&s, 3), 0);
    bool all = TEST_WAIT_UNTIL(SEM_DONE() == SEM_WAITERS, SETTLE);
#undef SEM_DONE
    for (int i = 0; i < SEM_WAITERS; i++) ASSERT_RC(waiter_join(&w[i]), 0);
    assert_int_equal(early, 0);
    assert_true(two);
    assert_false(more);
    assert_int_equal(value_after_two, 0);
    assert_true(all);
    ASSERT_RC(crew_sem_value(&s), 0);

    /* With fewer waiters than units, the rest stays in the count. */
    ASSERT_RC(crew_sem_release(&s, 2), 0);
    ASSERT_RC(crew_sem_value(&s), 2);
    ASSERT_RC(crew_sem_destroy(&s), 0);
}
FLAG_VARIANTS(sem_release_n_wakes)

/* Semaphore(3) admits at most 3 threads at a time (CPython's
 * test_acquire_contended, as a conservation check). */
typedef struct sem_user {
    crew_sem *sem;
    _Atomic int *inside;
    _Atomic int *max_inside;
    long iters;
    int rc;
    pthread_t th;
} sem_user;

static void *sem_user_main(void *p) {
    sem_user *u = p;
    for (long i = 0; i < u->iters; i++) {
        int rc = crew_sem_acquire(u->sem, i % 2 ? CREW_FOREVER : LONG_WAIT);
        if (rc != 0) { u->rc = rc; return NULL; }
        int in = atomic_fetch_add(u->inside, 1) + 1;
        int m = atomic_load(u->max_inside);
        while (in > m && !atomic_compare_exchange_weak(u->max_inside, &m, in)) {}
        if (i % 16 == 0) sched_yield();
        atomic_fetch_sub(u->inside, 1);
        rc = crew_sem_release(u->sem, 1);
        if (rc != 0) { u->rc = rc; return NULL; }
    }
    return NULL;
}

static void sem_admits_at_most_value(unsigned flags) {
    enum { USERS = 6, LIMIT = 3 };
    crew_sem s;
    ASSERT_RC(crew_sem_init_bounded(&s, LIMIT, flags), 0);
    _Atomic int inside, max_inside;
    atomic_init(&inside, 0);
    atomic_init(&max_inside, 0);
    sem_user u[USERS];
    for (int i = 0; i < USERS; i++) {
        u[i] = (sem_user){.sem = &s, .inside = &inside, .max_inside = &max_inside,
                          .iters = test_scaled(5000)};
        th_start(&u[i].th, sem_user_main, &u[i]);
    }
    for (int i = 0; i < USERS; i++) th_join(u[i].th);
    for (int i = 0; i < USERS; i++) ASSERT_RC(u[i].rc, 0);
    assert_true(atomic_load(&max_inside) >= 1);
    assert_true(atomic_load(&max_inside) <= LIMIT);
    ASSERT_RC(crew_sem_value(&s), LIMIT);
    ASSERT_RC(crew_sem_destroy(&s), 0);
}
FLAG_VARIANTS(sem_admits_at_most_value)

/* Producers release, consumers acquire: every unit is consumed once. */
typedef struct sem_pc {
    crew_sem *sem;
    long units;
    int rc;
    pthread_t th;
} sem_pc;

static void *sem_producer_main(void *p) {
    sem_pc *a = p;
    for (long i = 0; i < a->units;) {
        unsigned n = (i % 7 == 0 && a->units - i >= 3) ? 3 : 1;
        int rc = crew_sem_release(a->sem, n);
        if (rc != 0) { a->rc = rc; return NULL; }
        i += n;
    }
    return NULL;
}

static void *sem_consumer_main(void *p) {
    sem_pc *a = p;
    for (long i = 0; i < a->units; i++) {
        int rc = crew_sem_acquire(a->sem, LONG_WAIT);
        if (rc != 0) { a->rc = rc; return NULL; }
    }
    return NULL;
}

static void sem_producer_consumer(unsigned flags) {
    crew_sem s;
    ASSERT_RC(crew_sem_init(&s, 0, flags), 0);
    long units = test_scaled(20000);
    sem_pc a[4];
    for (int i = 0; i < 4; i++) {
        a[i] = (sem_pc){.sem = &s, .units = units};
        th_start(&a[i].th, i < 2 ? sem_consumer_main : sem_producer_main, &a[i]);
    }
    for (int i = 0; i < 4; i++) th_join(a[i].th);
    for (int i = 0; i < 4; i++) ASSERT_RC(a[i].rc, 0);
    ASSERT_RC(crew_sem_value(&s), 0);
    ASSERT_RC(crew_sem_acquire(&s, 0), CREW_EBUSY);
    ASSERT_RC(crew_sem_destroy(&s), 0);
}
FLAG_VARIANTS(sem_producer_consumer)

static void sem_destroy_busy(unsigned flags) {
    crew_sem s;
    waiter w;
    ASSERT_RC(crew_sem_init(&s, 0, flags), 0);
    waiter_start(&w, op_sem_acquire, &s, LONG_WAIT);
    bool blocked = waiter_blocked(&w, SETTLE);
    int destroy_rc = blocked ? crew_sem_destroy(&s) : INT_MIN;
    int value = crew_sem_value(&s);
    ASSERT_RC(crew_sem_release(&s, 1), 0);
    ASSERT_RC(waiter_join(&w), 0);
    assert_true(blocked);
    ASSERT_RC(destroy_rc, CREW_EBUSY);
    ASSERT_RC(value, 0);
    ASSERT_RC(crew_sem_value(&s), 0);
    ASSERT_RC(crew_sem_destroy(&s), 0);
}
FLAG_VARIANTS(sem_destroy_busy)

static void test_sem_invalid(void **state) {
    (void)state;
    crew_sem s;
    ASSERT_RC(crew_sem_init(NULL, 1, 0), CREW_EINVAL);
    ASSERT_RC(crew_sem_init_bounded(NULL, 1, 0), CREW_EINVAL);
    ASSERT_RC(crew_sem_init(&s, 1, 0x80), CREW_EINVAL);
    ASSERT_RC(crew_sem_init_bounded(&s, 1, 0x80), CREW_EINVAL);
    ASSERT_RC(crew_sem_destroy(NULL), CREW_EINVAL);
    ASSERT_RC(crew_sem_acquire(NULL, 0), CREW_EINVAL);
    ASSERT_RC(crew_sem_release(NULL, 1), CREW_EINVAL);
    ASSERT_RC(crew_sem_value(NULL), CREW_EINVAL);

    ASSERT_RC(crew_sem_init(&s, 1, 0), 0);
    ASSERT_RC(crew_sem_acquire(&s, -1.0), CREW_EINVAL);
    ASSERT_RC(crew_sem_acquire(&s, NAN), CREW_EINVAL);
    ASSERT_RC(crew_sem_acquire(&s, -INFINITY), CREW_EINVAL);
    ASSERT_RC(crew_sem_value(&s), 1);
    ASSERT_RC(crew_sem_destroy(&s), 0);
    ASSERT_RC(crew_sem_acquire(&s, 0), CREW_EINVAL);
    ASSERT_RC(crew_sem_release(&s, 1), CREW_EINVAL);
    ASSERT_RC(crew_sem_value(&s), CREW_EINVAL);
    ASSERT_RC(crew_sem_destroy(&s), CREW_EINVAL);

    memset(&s, 0, sizeof s);
    ASSERT_RC(crew_sem_acquire(&s, 0), CREW_EINVAL);
    ASSERT_RC(crew_sem_acquire(&s, CREW_FOREVER), CREW_EINVAL);
    ASSERT_RC(crew_sem_release(&s, 1), CREW_EINVAL);
    ASSERT_RC(crew_sem_value(&s), CREW_EINVAL);
    ASSERT_RC(crew_sem_destroy(&s), CREW_EINVAL);
}

/* ================================================================= event */

static int op_event_wait(waiter *w) { return crew_event_wait(w->obj, w->timeout); }

static void event_basic(unsigned flags) {
    crew_event e;
    ASSERT_RC(crew_event_init(&e, flags), 0);
    assert_false(crew_event_is_set(&e));
    ASSERT_RC(crew_event_wait(&e, 0), CREW_ETIMEDOUT);
    double t0 = test_now();
    ASSERT_RC(crew_event_wait(&e, SHORT), CREW_ETIMEDOUT);
    ASSERT_ELAPSED(test_now() - t0, SHORT);
    assert_false(crew_event_is_set(&e));

    ASSERT_RC(crew_event_set(&e), 0);
    assert_true(crew_event_is_set(&e));
    ASSERT_RC(crew_event_wait(&e, 0), 0);
    /* Set: waits return at once whatever their timeout. */
    t0 = test_now();
    ASSERT_RC(crew_event_wait(&e, CREW_FOREVER), 0);
    ASSERT_RC(crew_event_wait(&e, 5.0), 0);
    assert_true(test_now() - t0 < TIME_SLACK);
    ASSERT_RC(crew_event_set(&e), 0);
    assert_true(crew_event_is_set(&e));

    ASSERT_RC(crew_event_clear(&e), 0);
    assert_false(crew_event_is_set(&e));
    ASSERT_RC(crew_event_clear(&e), 0);
    assert_false(crew_event_is_set(&e));
    ASSERT_RC(crew_event_wait(&e, 0), CREW_ETIMEDOUT);
    ASSERT_RC(crew_event_destroy(&e), 0);
}
FLAG_VARIANTS(event_basic)

#define EVENT_WAITERS 5

static void event_set_wakes_all(unsigned flags) {
    crew_event e;
    waiter w[EVENT_WAITERS];
    ASSERT_RC(crew_event_init(&e, flags), 0);
    for (int i = 0; i < EVENT_WAITERS; i++)
        waiter_start(&w[i], op_event_wait, &e, i % 2 ? CREW_FOREVER : LONG_WAIT);
    int early = 0;
    for (int i = 0; i < EVENT_WAITERS; i++) (void)waiter_blocked(&w[i], SOFT_SETTLE);
    /* Nobody may return before the set. */
    for (int i = 0; i < EVENT_WAITERS; i++) early += atomic_load(&w[i].done);
    ASSERT_RC(crew_event_set(&e), 0);
    for (int i = 0; i < EVENT_WAITERS; i++) ASSERT_RC(waiter_join(&w[i]), 0);
    assert_int_equal(early, 0);
    assert_true(crew_event_is_set(&e));
    ASSERT_RC(crew_event_destroy(&e), 0);
}
FLAG_VARIANTS(event_set_wakes_all)

/* CPython gh-57711 (test_set_and_clear): threads waiting when set() is called
 * are released even if clear() follows before they run. */
static void event_set_then_clear(unsigned flags) {
    crew_event e;
    waiter w[EVENT_WAITERS];
    ASSERT_RC(crew_event_init(&e, flags), 0);
    for (int i = 0; i < EVENT_WAITERS; i++) waiter_start(&w[i], op_event_wait, &e, 5.0);
    int blocked = 0;
    for (int i = 0; i < EVENT_WAITERS; i++) blocked += waiter_blocked(&w[i], SETTLE);
    ASSERT_RC(crew_event_set(&e), 0);
    ASSERT_RC(crew_event_clear(&e), 0);
    int rcs[EVENT_WAITERS];
    for (int i = 0; i < EVENT_WAITERS; i++) rcs[i] = waiter_join(&w[i]);
    assert_int_equal(blocked, EVENT_WAITERS);
    for (int i = 0; i < EVENT_WAITERS; i++) ASSERT_RC(rcs[i], 0);
    assert_false(crew_event_is_set(&e));
    ASSERT_RC(crew_event_destroy(&e), 0);
}
FLAG_VARIANTS(event_set_then_clear)

/* Two threads hand a token back and forth through two events. */
typedef struct ping {
    crew_event *mine, *theirs;
    long rounds;
    long *count;
    int rc;
    pthread_t th;
} ping;

static void *ping_main(void *p) {
    ping *a = p;
    for (long i = 0; i < a->rounds; i++) {
        int rc = crew_event_wait(a->mine, LONG_WAIT);
        if (rc == 0) rc = crew_event_clear(a->mine);
        if (rc != 0) { a->rc = rc; return NULL; }
        (*a->count)++;
        rc = crew_event_set(a->theirs);
        if (rc != 0) { a->rc = rc; return NULL; }
    }
    return NULL;
}

static void event_ping_pong(unsigned flags) {
    crew_event e1, e2;
    long count = 0;
    ASSERT_RC(crew_event_init(&e1, flags), 0);
    ASSERT_RC(crew_event_init(&e2, flags), 0);
    long rounds = test_scaled(2000);
    ping a = {.mine = &e1, .theirs = &e2, .rounds = rounds, .count = &count};
    ping b = {.mine = &e2, .theirs = &e1, .rounds = rounds, .count = &count};
    th_start(&a.th, ping_main, &a);
    th_start(&b.th, ping_main, &b);
    ASSERT_RC(crew_event_set(&e1), 0);
    th_join(a.th);
    th_join(b.th);
    ASSERT_RC(a.rc, 0);
    ASSERT_RC(b.rc, 0);
    assert_int_equal(count, 2 * rounds);
    /* b's last set of e1 is never consumed. */
    assert_true(crew_event_is_set(&e1));
    assert_false(crew_event_is_set(&e2));
    ASSERT_RC(crew_event_destroy(&e1), 0);
    ASSERT_RC(crew_event_destroy(&e2), 0);
}
FLAG_VARIANTS(event_ping_pong)

static void event_destroy_busy(unsigned flags) {
    crew_event e;
    waiter w;
    ASSERT_RC(crew_event_init(&e, flags), 0);
    waiter_start(&w, op_event_wait, &e, LONG_WAIT);
    bool blocked = waiter_blocked(&w, SETTLE);
    int destroy_rc = blocked ? crew_event_destroy(&e) : INT_MIN;
    ASSERT_RC(crew_event_set(&e), 0);
    ASSERT_RC(waiter_join(&w), 0);
    assert_true(blocked);
    ASSERT_RC(destroy_rc, CREW_EBUSY);
    ASSERT_RC(crew_event_destroy(&e), 0);
}
FLAG_VARIANTS(event_destroy_busy)

static void test_event_invalid(void **state) {
    (void)state;
    crew_event e;
    ASSERT_RC(crew_event_init(NULL, 0), CREW_EINVAL);
    ASSERT_RC(crew_event_init(&e, 0x80), CREW_EINVAL);
    ASSERT_RC(crew_event_destroy(NULL), CREW_EINVAL);
    ASSERT_RC(crew_event_set(NULL), CREW_EINVAL);
    ASSERT_RC(crew_event_clear(NULL), CREW_EINVAL);
    ASSERT_RC(crew_event_wait(NULL, 0), CREW_EINVAL);
    assert_false(crew_event_is_set(NULL));

    ASSERT_RC(crew_event_init(&e, 0), 0);
    ASSERT_RC(crew_event_wait(&e, -1.0), CREW_EINVAL);
    ASSERT_RC(crew_event_wait(&e, NAN), CREW_EINVAL);
    ASSERT_RC(crew_event_set(&e), 0);
    /* Bad timeouts are refused even when the wait would succeed at once. */
    ASSERT_RC(crew_event_wait(&e, -1.0), CREW_EINVAL);
    ASSERT_RC(crew_event_wait(&e, NAN), CREW_EINVAL);
    ASSERT_RC(crew_event_destroy(&e), 0);
    ASSERT_RC(crew_event_set(&e), CREW_EINVAL);
    ASSERT_RC(crew_event_clear(&e), CREW_EINVAL);
    ASSERT_RC(crew_event_wait(&e, 0), CREW_EINVAL);
    ASSERT_RC(crew_event_destroy(&e), CREW_EINVAL);
    assert_false(crew_event_is_set(&e));

    memset(&e, 0, sizeof e);
    ASSERT_RC(crew_event_set(&e), CREW_EINVAL);
    ASSERT_RC(crew_event_clear(&e), CREW_EINVAL);
    ASSERT_RC(crew_event_wait(&e, 0), CREW_EINVAL);
    ASSERT_RC(crew_event_wait(&e, CREW_FOREVER), CREW_EINVAL);
    ASSERT_RC(crew_event_destroy(&e), CREW_EINVAL);
    assert_false(crew_event_is_set(&e));
}

/* ============================================================= condition */

/* The three kinds of lock a condition can work with. */
enum { K_OWN, K_LOCK, K_RLOCK };

typedef struct cfix {
    crew_lock lock;
    crew_rlock rlock;
    crew_cond cond;
    int kind;
} cfix;

static void cfix_init(cfix *f, int kind, unsigned flags) {
    f->kind = kind;
    switch (kind) {
    case K_OWN:
        ASSERT_RC(crew_cond_init(&f->cond, NULL, flags), 0);
        break;
    case K_LOCK:
        ASSERT_RC(crew_lock_init(&f->lock, flags), 0);
        ASSERT_RC(crew_cond_init(&f->cond, &f->lock, flags), 0);
        break;
    default:
        ASSERT_RC(crew_rlock_init(&f->rlock, flags), 0);
        ASSERT_RC(crew_cond_init_rlock(&f->cond, &f->rlock, flags), 0);
        break;
    }
}

static void cfix_destroy(cfix *f) {
    ASSERT_RC(crew_cond_destroy(&f->cond), 0);
    if (f->kind == K_LOCK) ASSERT_RC(crew_lock_destroy(&f->lock), 0);
    if (f->kind == K_RLOCK) ASSERT_RC(crew_rlock_destroy(&f->rlock), 0);
}

/* Whether the calling thread holds the condition's lock, where that can be
 * seen from outside (not for the condition's own rlock). */
static bool cfix_held(cfix *f) {
    switch (f->kind) {
    case K_LOCK: return crew_lock_locked(&f->lock);
    case K_RLOCK: return crew_rlock_owned(&f->rlock);
    default: return true;
    }
}

/* Tests that run for every kind of lock, private and shared:
 * name(int kind, unsigned flags). */
#define COND_VARIANTS(name)                                                     \
    static void name##_own(void **s) { (void)s; name(K_OWN, 0); }               \
    static void name##_lock(void **s) { (void)s; name(K_LOCK, 0); }             \
    static void name##_rlock(void **s) { (void)s; name(K_RLOCK, 0); }           \
    static void name##_own_shared(void **s) { (void)s; name(K_OWN, CREW_SHARED); } \
    static void name##_lock_shared(void **s) { (void)s; name(K_LOCK, CREW_SHARED); } \
    static void name##_rlock_shared(void **s) { (void)s; name(K_RLOCK, CREW_SHARED); }
/* Only the kinds with a re-entrant lock. */
#define REENTRANT_VARIANTS(name)                                                \
    static void name##_own(void **s) { (void)s; name(K_OWN, 0); }               \
    static void name##_rlock(void **s) { (void)s; name(K_RLOCK, 0); }           \
    static void name##_own_shared(void **s) { (void)s; name(K_OWN, CREW_SHARED); } \
    static void name##_rlock_shared(void **s) { (void)s; name(K_RLOCK, CREW_SHARED); }
#define REENTRANT_ALL(name)                                                     \
    cmocka_unit_test(name##_own), cmocka_unit_test(name##_rlock),               \
        cmocka_unit_test(name##_own_shared), cmocka_unit_test(name##_rlock_shared)
#define COND_ALL(name)                                                          \
    cmocka_unit_test(name##_own), cmocka_unit_test(name##_lock),                \
        cmocka_unit_test(name##_rlock), cmocka_unit_test(name##_own_shared),    \
        cmocka_unit_test(name##_lock_shared), cmocka_unit_test(name##_rlock_shared)

/* A thread that counts itself under the lock, waits once, and counts its
 * wake-up. Once the main thread holds the lock after seeing the count, the
 * waiter has released the lock inside crew_cond_wait, so it is waiting. */
typedef struct cond_shared {
    cfix *f;
    _Atomic int ready;
    _Atomic int woke;
} cond_shared;

typedef struct cond_waiter {
    cond_shared *s;
    int acq_rc, wait_rc, rel_rc;
    bool held_after;
    pthread_t th;
} cond_waiter;

static void *cond_waiter_main(void *p) {
    cond_waiter *w = p;
    crew_cond *c = &w->s->f->cond;
    w->wait_rc = w->rel_rc = INT_MIN;
    w->acq_rc = crew_cond_acquire(c, LONG_WAIT);
    if (w->acq_rc != 0) return NULL;
    atomic_fetch_add(&w->s->ready, 1);
    w->wait_rc = crew_cond_wait(c, LONG_WAIT);
    w->held_after = cfix_held(w->s->f);
    atomic_fetch_add(&w->s->woke, 1);
    w->rel_rc = crew_cond_release(c);
    return NULL;
}

static void cond_waiter_start(cond_waiter *w, cond_shared *s) {
    w->s = s;
    th_start(&w->th, cond_waiter_main, w);
}

static void cond_waiter_check(cond_waiter *w) {
    th_join(w->th);
    ASSERT_RC(w->acq_rc, 0);
    ASSERT_RC(w->wait_rc, 0);
    assert_true(w->held_after);
    ASSERT_RC(w->rel_rc, 0);
}

static void cond_notify_locked(cfix *f, unsigned n) {
    ASSERT_RC(crew_cond_acquire(&f->cond, LONG_WAIT), 0);
    if (n == 0)
        ASSERT_RC(crew_cond_notify_all(&f->cond), 0);
    else
        ASSERT_RC(crew_cond_notify(&f->cond, n), 0);
    ASSERT_RC(crew_cond_release(&f->cond), 0);
}

#define COND_WAITERS 5

/* notify(n) wakes exactly n of the waiting threads; notify(n) beyond the
 * number waiting leaves no credit for threads that wait later. */
static void cond_notify_n(int kind, unsigned flags) {
    cfix f;
    cfix_init(&f, kind, flags);
    cond_shared s = {.f = &f};
    atomic_init(&s.ready, 0);
    atomic_init(&s.woke, 0);
    cond_waiter w[COND_WAITERS + 1];
    for (int i = 0; i < COND_WAITERS; i++) cond_waiter_start(&w[i], &s);
    bool ready = TEST_WAIT_UNTIL(atomic_load(&s.ready) == COND_WAITERS, SETTLE);
    int woke_before = atomic_load(&s.woke);

    cond_notify_locked(&f, 2);
    bool two = TEST_WAIT_UNTIL(atomic_load(&s.woke) == 2, SETTLE);
    bool past_two = TEST_WAIT_UNTIL(atomic_load(&s.woke) > 2, GRACE);

    cond_notify_locked(&f, 1);
    bool three = TEST_WAIT_UNTIL(atomic_load(&s.woke) == 3, SETTLE);
    bool past_three = TEST_WAIT_UNTIL(atomic_load(&s.woke) > 3, GRACE);

    /* 10 for the 2 still waiting. */
    cond_notify_locked(&f, 10);
    bool five = TEST_WAIT_UNTIL(atomic_load(&s.woke) == COND_WAITERS, SETTLE);

    /* The 8 notifications nobody took are not kept for later waiters: a
     * timed wait still times out... */
    ASSERT_RC(crew_cond_acquire(&f.cond, LONG_WAIT), 0);
    int stale_rc = crew_cond_wait(&f.cond, 0.02);
    ASSERT_RC(crew_cond_release(&f.cond), 0);

    /* ...and a late waiter is not woken by them, nor by the lock changing
     * hands. */
    cond_waiter_start(&w[COND_WAITERS], &s);
    bool late_ready = TEST_WAIT_UNTIL(atomic_load(&s.ready) == COND_WAITERS + 1, SETTLE);
    ASSERT_RC(crew_cond_acquire(&f.cond, LONG_WAIT), 0);
    ASSERT_RC(crew_cond_release(&f.cond), 0);
    bool late_woke_alone = TEST_WAIT_UNTIL(atomic_load(&s.woke) > COND_WAITERS, GRACE);
    cond_notify_locked(&f, 1);
    bool late_woke = TEST_WAIT_UNTIL(atomic_load(&s.woke) == COND_WAITERS + 1, SETTLE);

    for (int i = 0; i <= COND_WAITERS; i++) cond_waiter_check(&w[i]);
    assert_true(ready);
    assert_int_equal(woke_before, 0);
    assert_true(two);
    assert_false(past_two);
    assert_true(three);
    assert_false(past_three);
    assert_true(five);
    ASSERT_RC(stale_rc, CREW_ETIMEDOUT);
    assert_true(late_ready);
    assert_false(late_woke_alone);
    assert_true(late_woke);
    cfix_destroy(&f);
}
COND_VARIANTS(cond_notify_n)

static void cond_notify_all(int kind, unsigned flags) {
    cfix f;
    cfix_init(&f, kind, flags);
    cond_shared s = {.f = &f};
    atomic_init(&s.ready, 0);
    atomic_init(&s.woke, 0);
    cond_waiter w[COND_WAITERS];
    for (int i = 0; i < COND_WAITERS; i++) cond_waiter_start(&w[i], &s);
    bool ready = TEST_WAIT_UNTIL(atomic_load(&s.ready) == COND_WAITERS, SETTLE);
    /* Holding the lock, all of them are inside wait. */
    ASSERT_RC(crew_cond_acquire(&f.cond, LONG_WAIT), 0);
    int woke_before = atomic_load(&s.woke);
    ASSERT_RC(crew_cond_notify_all(&f.cond), 0);
    ASSERT_RC(crew_cond_release(&f.cond), 0);
    bool all = TEST_WAIT_UNTIL(atomic_load(&s.woke) == COND_WAITERS, SETTLE);
    for (int i = 0; i < COND_WAITERS; i++) cond_waiter_check(&w[i]);
    assert_true(ready);
    assert_int_equal(woke_before, 0);
    assert_true(all);

    /* Notifying with nobody waiting does nothing, now or later: a timed wait
     * times out and a new waiter sleeps until the next notify. */
    cond_notify_locked(&f, 0);
    cond_notify_locked(&f, 3);
    ASSERT_RC(crew_cond_acquire(&f.cond, LONG_WAIT), 0);
    int stale_rc = crew_cond_wait(&f.cond, 0.02);
    ASSERT_RC(crew_cond_release(&f.cond), 0);
    cond_waiter_start(&w[0], &s);
    ready = TEST_WAIT_UNTIL(atomic_load(&s.ready) == COND_WAITERS + 1, SETTLE);
    bool stale = TEST_WAIT_UNTIL(atomic_load(&s.woke) > COND_WAITERS, GRACE);
    cond_notify_locked(&f, 0);
    cond_waiter_check(&w[0]);
    ASSERT_RC(stale_rc, CREW_ETIMEDOUT);
    assert_true(ready);
    assert_false(stale);
    cfix_destroy(&f);
}
COND_VARIANTS(cond_notify_all)

/* A notify wakes a thread that was waiting when it was sent, never one that
 * starts waiting afterwards (no stolen wake-up). */
typedef struct late_cond {
    cfix *f;
    _Atomic int tid;
    _Atomic int ready;
    _Atomic int woke;
    int wait_rc, rel_rc;
} late_cond;

static void *late_waiter_main(void *p) {
    late_cond *l = p;
    atomic_store(&l->tid, my_tid());
    if (crew_cond_acquire(&l->f->cond, LONG_WAIT) != 0) return NULL;
    atomic_store(&l->ready, 1);
    l->wait_rc = crew_cond_wait(&l->f->cond, LONG_WAIT);
    atomic_store(&l->woke, 1);
    l->rel_rc = crew_cond_release(&l->f->cond);
    return NULL;
}

static void cond_no_stolen_wakeup(int kind, unsigned flags) {
    enum { EARLY = 3 };
    cfix f;
    cfix_init(&f, kind, flags);
    cond_shared s = {.f = &f};
    atomic_init(&s.ready, 0);
    atomic_init(&s.woke, 0);
    cond_waiter w[EARLY];
    for (int i = 0; i < EARLY; i++) cond_waiter_start(&w[i], &s);
    bool ready = TEST_WAIT_UNTIL(atomic_load(&s.ready) == EARLY, SETTLE);

    late_cond l = {.f = &f, .wait_rc = INT_MIN, .rel_rc = INT_MIN};
    atomic_init(&l.tid, 0);
    atomic_init(&l.ready, 0);
    atomic_init(&l.woke, 0);
    pthread_t lt;
    ASSERT_RC(crew_cond_acquire(&f.cond, LONG_WAIT), 0);
    /* The late thread queues for the lock first (best effort: asleep on it
     * before the notify), so it may well get the lock before the notified
     * waiter does; even so it must not take that waiter's notification. */
    th_start(&lt, late_waiter_main, &l);
    (void)TEST_WAIT_UNTIL(atomic_load(&l.tid) != 0 && task_in_futex(getpid(), atomic_load(&l.tid)),
                          SOFT_SETTLE);
    ASSERT_RC(crew_cond_notify(&f.cond, 1), 0);
    ASSERT_RC(crew_cond_release(&f.cond), 0);
    bool early_woke = TEST_WAIT_UNTIL(atomic_load(&s.woke) == 1, SETTLE);
    bool late_ready = TEST_WAIT_UNTIL(atomic_load(&l.ready) == 1, SETTLE);
    bool late_woke = TEST_WAIT_UNTIL(atomic_load(&l.woke) == 1, GRACE);
    int early_count = atomic_load(&s.woke);

    cond_notify_locked(&f, 0);
    th_join(lt);
    for (int i = 0; i < EARLY; i++) cond_waiter_check(&w[i]);
    assert_true(ready);
    assert_true(early_woke);
    assert_true(late_ready);
    assert_false(late_woke);
    assert_int_equal(early_count, 1);
    ASSERT_RC(l.wait_rc, 0);
    ASSERT_RC(l.rel_rc, 0);
    cfix_destroy(&f);
}
COND_VARIANTS(cond_no_stolen_wakeup)

/* A timed-out wait returns with the lock held again. */
static void cond_wait_timeout(int kind, unsigned flags) {
    cfix f;
    cfix_init(&f, kind, flags);
    ASSERT_RC(crew_cond_acquire(&f.cond, LONG_WAIT), 0);
    double t0 = test_now();
    ASSERT_RC(crew_cond_wait(&f.cond, SHORT), CREW_ETIMEDOUT);
    ASSERT_ELAPSED(test_now() - t0, SHORT);
    assert_true(cfix_held(&f));
    ASSERT_RC(crew_cond_wait(&f.cond, 0), CREW_ETIMEDOUT);
    assert_true(cfix_held(&f));
    ASSERT_RC(crew_cond_release(&f.cond), 0);
    /* Exactly one level was held after the timeouts. */
    ASSERT_RC(crew_cond_release(&f.cond), CREW_EPERM);
    assert_false(f.kind == K_LOCK && crew_lock_locked(&f.lock));
    cfix_destroy(&f);
}
COND_VARIANTS(cond_wait_timeout)

/* wait_for: the predicate, evaluated with the lock held, ends the wait. */
typedef struct pred_arg {
    cfix *f;
    int value;                 /* under the condition's lock */
    int target;
    _Atomic int calls;
    _Atomic int unheld_calls;  /* calls made without the lock */
} pred_arg;

static bool pred_reached(void *p) {
    pred_arg *a = p;
    atomic_fetch_add(&a->calls, 1);
    if (!cfix_held(a->f)) atomic_fetch_add(&a->unheld_calls, 1);
    return a->value >= a->target;
}

typedef struct stepper {
    pred_arg *a;
    int steps;
    int rc;
    pthread_t th;
} stepper;

static void *stepper_main(void *p) {
    stepper *st = p;
    crew_cond *c = &st->a->f->cond;
    for (int i = 0; i < st->steps; i++) {
        int rc = crew_cond_acquire(c, LONG_WAIT);
        if (rc != 0) { st->rc = rc; return NULL; }
        st->a->value++;
        rc = i % 2 ? crew_cond_notify(c, 1) : crew_cond_notify_all(c);
        int rc2 = crew_cond_release(c);
        if (rc != 0 || rc2 != 0) { st->rc = rc ? rc : rc2; return NULL; }
        sched_yield();
    }
    return NULL;
}

static void cond_wait_for(int kind, unsigned flags) {
    cfix f;
    cfix_init(&f, kind, flags);
    pred_arg a = {.f = &f, .value = 0, .target = 0};
    atomic_init(&a.calls, 0);
    atomic_init(&a.unheld_calls, 0);

    ASSERT_RC(crew_cond_acquire(&f.cond, LONG_WAIT), 0);
    /* Already true: returns 0 at once, even with a 0 timeout. */
    ASSERT_RC(crew_cond_wait_for(&f.cond, pred_reached, &a, 0), 0);
    ASSERT_RC(crew_cond_wait_for(&f.cond, pred_reached, &a, CREW_FOREVER), 0);
    assert_true(atomic_load(&a.calls) >= 2);

    /* Never true: times out after one deadline, lock held. */
    a.target = 1;
    ASSERT_RC(crew_cond_wait_for(&f.cond, pred_reached, &a, 0), CREW_ETIMEDOUT);
    double t0 = test_now();
    ASSERT_RC(crew_cond_wait_for(&f.cond, pred_reached, &a, SHORT), CREW_ETIMEDOUT);
    ASSERT_ELAPSED(test_now() - t0, SHORT);
    assert_true(cfix_held(&f));

    /* Made true step by step by another thread. */
    a.target = 5;
    stepper st = {.a = &a, .steps = 5};
    th_start(&st.th, stepper_main, &st);
    int rc = crew_cond_wait_for(&f.cond, pred_reached, &a, LONG_WAIT);
    int value = a.value;
    bool held = cfix_held(&f);
    ASSERT_RC(crew_cond_release(&f.cond), 0);
    th_join(st.th);
    ASSERT_RC(rc, 0);
    ASSERT_RC(st.rc, 0);
    assert_int_equal(value, 5);
    assert_true(held);
    assert_int_equal(atomic_load(&a.unheld_calls), 0);
    cfix_destroy(&f);
}
COND_VARIANTS(cond_wait_for)

/* wait_for keeps one deadline across wake-ups that leave the predicate false:
 * notifications every millisecond must not extend it. */
typedef struct spammer {
    cfix *f;
    _Atomic bool stop;
    long notifies;
    int rc;
    pthread_t th;
} spammer;

static void *spammer_main(void *p) {
    spammer *sp = p;
    double end = test_now() + 10.0;
    while (!atomic_load(&sp->stop) && test_now() < end) {
        int rc = crew_cond_acquire(&sp->f->cond, LONG_WAIT);
        if (rc == 0) rc = crew_cond_notify_all(&sp->f->cond);
        if (rc == 0) rc = crew_cond_release(&sp->f->cond);
        if (rc != 0) { sp->rc = rc; return NULL; }
        sp->notifies++;
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    return NULL;
}

static bool pred_false(void *p) {
    (*(_Atomic long *)p)++;
    return false;
}

static void cond_wait_for_one_deadline(int kind, unsigned flags) {
    cfix f;
    cfix_init(&f, kind, flags);
    spammer sp = {.f = &f};
    atomic_init(&sp.stop, false);
    _Atomic long calls;
    atomic_init(&calls, 0);
    th_start(&sp.th, spammer_main, &sp);
    const double timeout = 0.3;
    ASSERT_RC(crew_cond_acquire(&f.cond, LONG_WAIT), 0);
    double t0 = test_now();
    int rc = crew_cond_wait_for(&f.cond, pred_false, &calls, timeout);
    double elapsed = test_now() - t0;
    bool held = cfix_held(&f);
    ASSERT_RC(crew_cond_release(&f.cond), 0);
    atomic_store(&sp.stop, true);
    th_join(sp.th);
    ASSERT_RC(sp.rc, 0);
    ASSERT_RC(rc, CREW_ETIMEDOUT);
    ASSERT_ELAPSED(elapsed, timeout);
    assert_true(held);
    /* The predicate was re-checked after wake-ups. */
    assert_true(atomic_load(&calls) >= 2);
    cfix_destroy(&f);
}
COND_VARIANTS(cond_wait_for_one_deadline)

/* Waiting or notifying without the lock is CREW_EPERM. */
typedef struct cond_holder {
    cfix *f;
    _Atomic int phase;         /* 1: holding, 2: may release */
    int acq_rc, rel_rc;
} cond_holder;

static void *cond_holder_main(void *p) {
    cond_holder *h = p;
    h->acq_rc = crew_cond_acquire(&h->f->cond, LONG_WAIT);
    atomic_store(&h->phase, 1);
    (void)TEST_WAIT_UNTIL(atomic_load(&h->phase) == 2, 60.0);
    h->rel_rc = crew_cond_release(&h->f->cond);
    return NULL;
}

static bool pred_true(void *p) {
    (void)p;
    return true;
}

static void cond_unowned(int kind, unsigned flags) {
    cfix f;
    cfix_init(&f, kind, flags);
    double t0 = test_now();
    ASSERT_RC(crew_cond_wait(&f.cond, 5.0), CREW_EPERM);
    ASSERT_RC(crew_cond_wait(&f.cond, 0), CREW_EPERM);
    ASSERT_RC(crew_cond_wait_for(&f.cond, pred_true, NULL, 5.0), CREW_EPERM);
    assert_true(test_now() - t0 < TIME_SLACK);
    ASSERT_RC(crew_cond_notify(&f.cond, 1), CREW_EPERM);
    ASSERT_RC(crew_cond_notify_all(&f.cond), CREW_EPERM);
    ASSERT_RC(crew_cond_release(&f.cond), CREW_EPERM);
    assert_false(f.kind == K_LOCK && crew_lock_locked(&f.lock));

    /* Held: a NULL predicate and bad timeouts are refused, the lock kept. */
    ASSERT_RC(crew_cond_acquire(&f.cond, LONG_WAIT), 0);
    ASSERT_RC(crew_cond_wait_for(&f.cond, NULL, NULL, 0), CREW_EINVAL);
    ASSERT_RC(crew_cond_wait(&f.cond, -1.0), CREW_EINVAL);
    ASSERT_RC(crew_cond_wait(&f.cond, NAN), CREW_EINVAL);
    ASSERT_RC(crew_cond_wait_for(&f.cond, pred_true, NULL, -1.0), CREW_EINVAL);
    assert_true(cfix_held(&f));
    ASSERT_RC(crew_cond_release(&f.cond), 0);

    if (kind != K_LOCK) {
        /* Re-entrant locks have an owner: a thread that is not it may not
         * wait or notify, even while the lock is held. */
        cond_holder h = {.f = &f};
        atomic_init(&h.phase, 0);
        pthread_t t;
        th_start(&t, cond_holder_main, &h);
        bool holding = TEST_WAIT_UNTIL(atomic_load(&h.phase) == 1, SETTLE);
        int wait_rc = crew_cond_wait(&f.cond, 5.0);
        int notify_rc = crew_cond_notify(&f.cond, 1);
        int all_rc = crew_cond_notify_all(&f.cond);
        int rel_rc = crew_cond_release(&f.cond);
        int try_rc = crew_cond_acquire(&f.cond, 0);
        atomic_store(&h.phase, 2);
        th_join(t);
        assert_true(holding);
        ASSERT_RC(h.acq_rc, 0);
        ASSERT_RC(wait_rc, CREW_EPERM);
        ASSERT_RC(notify_rc, CREW_EPERM);
        ASSERT_RC(all_rc, CREW_EPERM);
        ASSERT_RC(rel_rc, CREW_EPERM);
        ASSERT_RC(try_rc, CREW_EBUSY);
        ASSERT_RC(h.rel_rc, 0);
    }
    cfix_destroy(&f);
}
COND_VARIANTS(cond_unowned)

/* notify(0) does nothing (as Python's notify(n=0)): it is no error with the
 * lock held, CREW_EPERM without it, and it wakes nobody. */
static void test_cond_notify_zero(void **state) {
    (void)state;
    cfix f;
    cfix_init(&f, K_OWN, 0);
    ASSERT_RC(crew_cond_notify(&f.cond, 0), CREW_EPERM);
    cond_shared s = {.f = &f};
    atomic_init(&s.ready, 0);
    atomic_init(&s.woke, 0);
    cond_waiter w;
    cond_waiter_start(&w, &s);
    bool ready = TEST_WAIT_UNTIL(atomic_load(&s.ready) == 1, SETTLE);
    ASSERT_RC(crew_cond_acquire(&f.cond, LONG_WAIT), 0);
    int rc = crew_cond_notify(&f.cond, 0);
    ASSERT_RC(crew_cond_release(&f.cond), 0);
    bool woke = TEST_WAIT_UNTIL(atomic_load(&s.woke) != 0, GRACE);
    cond_notify_locked(&f, 1);
    cond_waiter_check(&w);
    assert_true(ready);
    ASSERT_RC(rc, 0);
    assert_false(woke);
    cfix_destroy(&f);
}

/* A condition over a re-entrant lock releases every level while it waits and
 * restores them all after. */

typedef struct level_notifier {
    cfix *f;
    int *flag;                 /* under the lock */
    int acq_rc, notify_rc, rel_rc;
    pthread_t th;
} level_notifier;

static void *level_notifier_main(void *p) {
    level_notifier *n = p;
    /* Succeeds only once the waiter has let go of all its levels. */
    n->acq_rc = crew_cond_acquire(&n->f->cond, LONG_WAIT);
    if (n->acq_rc != 0) return NULL;
    *n->flag = 1;
    n->notify_rc = crew_cond_notify(&n->f->cond, 1);
    n->rel_rc = crew_cond_release(&n->f->cond);
    return NULL;
}

static bool flag_set(void *p) { return *(int *)p != 0; }

static void cond_rlock_levels(int kind, unsigned flags) {
    cfix f;
    cfix_init(&f, kind, flags);
    const int levels = 3;
    for (int i = 0; i < levels; i++) ASSERT_RC(crew_cond_acquire(&f.cond, 0), 0);
    int flag = 0;
    level_notifier n = {.f = &f, .flag = &flag,
                        .acq_rc = INT_MIN, .notify_rc = INT_MIN, .rel_rc = INT_MIN};
    th_start(&n.th, level_notifier_main, &n);
    int rc = crew_cond_wait_for(&f.cond, flag_set, &flag, LONG_WAIT);
    th_join(n.th);
    ASSERT_RC(rc, 0);
    ASSERT_RC(n.acq_rc, 0);
    ASSERT_RC(n.notify_rc, 0);
    ASSERT_RC(n.rel_rc, 0);
    for (int i = 0; i < levels; i++) {
        assert_true(cfix_held(&f));
        ASSERT_RC(crew_cond_release(&f.cond), 0);
    }
    ASSERT_RC(crew_cond_release(&f.cond), CREW_EPERM);
    assert_false(f.kind == K_RLOCK && crew_rlock_owned(&f.rlock));

    /* A timed-out wait restores the levels too. */
    for (int i = 0; i < 2; i++) ASSERT_RC(crew_cond_acquire(&f.cond, 0), 0);
    ASSERT_RC(crew_cond_wait(&f.cond, 0.02), CREW_ETIMEDOUT);
    ASSERT_RC(crew_cond_release(&f.cond), 0);
    assert_true(cfix_held(&f));
    ASSERT_RC(crew_cond_release(&f.cond), 0);
    ASSERT_RC(crew_cond_release(&f.cond), CREW_EPERM);
    cfix_destroy(&f);
}
REENTRANT_VARIANTS(cond_rlock_levels)

static void cond_destroy_busy(int kind, unsigned flags) {
    cfix f;
    cfix_init(&f, kind, flags);
    cond_shared s = {.f = &f};
    atomic_init(&s.ready, 0);
    atomic_init(&s.woke, 0);
    cond_waiter w;
    cond_waiter_start(&w, &s);
    bool ready = TEST_WAIT_UNTIL(atomic_load(&s.ready) == 1, SETTLE);
    ASSERT_RC(crew_cond_acquire(&f.cond, LONG_WAIT), 0);
    int destroy_rc = crew_cond_destroy(&f.cond);
    ASSERT_RC(crew_cond_notify(&f.cond, 1), 0);
    ASSERT_RC(crew_cond_release(&f.cond), 0);
    cond_waiter_check(&w);
    assert_true(ready);
    ASSERT_RC(destroy_rc, CREW_EBUSY);
    cfix_destroy(&f);
}
COND_VARIANTS(cond_destroy_busy)

/* A bounded buffer with two conditions over one lock (not_empty, not_full),
 * notify(1) each time: every item arrives once. */
#define BB_CAP 4

typedef struct bbuf {
    crew_lock lock;
    crew_cond not_empty, not_full;
    long items[BB_CAP];
    int head, count;           /* under lock */
    long sum_in, sum_out, n_out; /* under lock */
} bbuf;

typedef struct bb_worker {
    bbuf *b;
    long n;
    long base;
    int rc;
    pthread_t th;
} bb_worker;

static bool bb_has_item(void *p) { return ((bbuf *)p)->count > 0; }
static bool bb_has_room(void *p) { return ((bbuf *)p)->count < BB_CAP; }

static void *bb_producer_main(void *p) {
    bb_worker *w = p;
    bbuf *b = w->b;
    for (long i = 0; i < w->n; i++) {
        int rc = crew_lock_acquire(&b->lock, LONG_WAIT);
        if (rc == 0) rc = crew_cond_wait_for(&b->not_full, bb_has_room, b, LONG_WAIT);
        if (rc != 0) { w->rc = rc; return NULL; }
        long item = w->base + i;
        b->items[(b->head + b->count) % BB_CAP] = item;
        b->count++;
        b->sum_in += item;
        rc = crew_cond_notify(&b->not_empty, 1);
        int rc2 = crew_lock_release(&b->lock);
        if (rc != 0 || rc2 != 0) { w->rc = rc ? rc : rc2; return NULL; }
    }
    return NULL;
}

static void *bb_consumer_main(void *p) {
    bb_worker *w = p;
    bbuf *b = w->b;
    for (long i = 0; i < w->n; i++) {
        int rc = crew_lock_acquire(&b->lock, LONG_WAIT);
        if (rc == 0) rc = crew_cond_wait_for(&b->not_empty, bb_has_item, b, LONG_WAIT);
        if (rc != 0) { w->rc = rc; return NULL; }
        long item = b->items[b->head];
        b->head = (b->head + 1) % BB_CAP;
        b->count--;
        b->sum_out += item;
        b->n_out++;
        rc = crew_cond_notify(&b->not_full, 1);
        int rc2 = crew_lock_release(&b->lock);
        if (rc != 0 || rc2 != 0) { w->rc = rc ? rc : rc2; return NULL; }
    }
    return NULL;
}

static void cond_bounded_buffer(unsigned flags) {
    bbuf b;
    memset(&b, 0, sizeof b);
    ASSERT_RC(crew_lock_init(&b.lock, flags), 0);
    ASSERT_RC(crew_cond_init(&b.not_empty, &b.lock, flags), 0);
    ASSERT_RC(crew_cond_init(&b.not_full, &b.lock, flags), 0);
    long n = test_scaled(5000);
    bb_worker w[4];
    for (int i = 0; i < 4; i++) {
        w[i] = (bb_worker){.b = &b, .n = n, .base = (long)i * 1000000};
        th_start(&w[i].th, i % 2 ? bb_consumer_main : bb_producer_main, &w[i]);
    }
    for (int i = 0; i < 4; i++) th_join(w[i].th);
    for (int i = 0; i < 4; i++) ASSERT_RC(w[i].rc, 0);
    assert_int_equal(b.count, 0);
    assert_int_equal(b.n_out, 2 * n);
    assert_int_equal(b.sum_out, b.sum_in);
    ASSERT_RC(crew_cond_destroy(&b.not_empty), 0);
    ASSERT_RC(crew_cond_destroy(&b.not_full), 0);
    ASSERT_RC(crew_lock_destroy(&b.lock), 0);
}
FLAG_VARIANTS(cond_bounded_buffer)

static void test_cond_invalid(void **state) {
    (void)state;
    crew_cond c;
    crew_lock l;
    crew_rlock r;
    ASSERT_RC(crew_cond_init(NULL, NULL, 0), CREW_EINVAL);
    ASSERT_RC(crew_cond_init(&c, NULL, 0x80), CREW_EINVAL);
    ASSERT_RC(crew_cond_init_rlock(&c, NULL, 0), CREW_EINVAL);
    ASSERT_RC(crew_cond_init_rlock(NULL, NULL, 0), CREW_EINVAL);
    ASSERT_RC(crew_cond_destroy(NULL), CREW_EINVAL);
    ASSERT_RC(crew_cond_acquire(NULL, 0), CREW_EINVAL);
    ASSERT_RC(crew_cond_release(NULL), CREW_EINVAL);
    ASSERT_RC(crew_cond_wait(NULL, 0), CREW_EINVAL);
    ASSERT_RC(crew_cond_wait_for(NULL, pred_true, NULL, 0), CREW_EINVAL);
    ASSERT_RC(crew_cond_notify(NULL, 1), CREW_EINVAL);
    ASSERT_RC(crew_cond_notify_all(NULL), CREW_EINVAL);

    /* A shared condition needs a shared lock. */
    ASSERT_RC(crew_lock_init(&l, 0), 0);
    ASSERT_RC(crew_rlock_init(&r, 0), 0);
    ASSERT_RC(crew_cond_init(&c, &l, CREW_SHARED), CREW_EINVAL);
    ASSERT_RC(crew_cond_init_rlock(&c, &r, CREW_SHARED), CREW_EINVAL);
    ASSERT_RC(crew_rlock_destroy(&r), 0);
    ASSERT_RC(crew_lock_destroy(&l), 0);

    ASSERT_RC(crew_cond_init(&c, NULL, 0), 0);
    ASSERT_RC(crew_cond_acquire(&c, -1.0), CREW_EINVAL);
    ASSERT_RC(crew_cond_acquire(&c, NAN), CREW_EINVAL);
    ASSERT_RC(crew_cond_release(&c), CREW_EPERM);
    ASSERT_RC(crew_cond_acquire(&c, 0), 0);
    ASSERT_RC(crew_cond_release(&c), 0);
    ASSERT_RC(crew_cond_destroy(&c), 0);
    ASSERT_RC(crew_cond_acquire(&c, 0), CREW_EINVAL);
    ASSERT_RC(crew_cond_release(&c), CREW_EINVAL);
    ASSERT_RC(crew_cond_wait(&c, 0), CREW_EINVAL);
    ASSERT_RC(crew_cond_notify(&c, 1), CREW_EINVAL);
    ASSERT_RC(crew_cond_notify_all(&c), CREW_EINVAL);
    ASSERT_RC(crew_cond_destroy(&c), CREW_EINVAL);

    memset(&c, 0, sizeof c);
    ASSERT_RC(crew_cond_acquire(&c, 0), CREW_EINVAL);
    ASSERT_RC(crew_cond_release(&c), CREW_EINVAL);
    ASSERT_RC(crew_cond_wait(&c, 0), CREW_EINVAL);
    ASSERT_RC(crew_cond_wait_for(&c, pred_true, NULL, 0), CREW_EINVAL);
    ASSERT_RC(crew_cond_notify(&c, 1), CREW_EINVAL);
    ASSERT_RC(crew_cond_notify_all(&c), CREW_EINVAL);
    ASSERT_RC(crew_cond_destroy(&c), CREW_EINVAL);
}

/* =============================================================== barrier */

static int op_barrier_wait(waiter *w) { return crew_barrier_wait(w->obj, w->timeout); }

/* Many cycles of `parties` threads or processes, checking per cycle that
 * everyone arrived before anyone left, that indices 0..parties-1 each came
 * once, and that the action ran once, by the last arrival, before release. */
#define BC_MAX 200
#define BP_MAX 4

typedef struct bcycle {
    crew_barrier barrier;
    int parties;
    int cycles;
    _Atomic int arrived[BC_MAX];
    _Atomic int left[BC_MAX];
    _Atomic int seen[BC_MAX][BP_MAX];
    _Atomic int action_tid[BC_MAX];
    _Atomic int actions;
    _Atomic int bad;
} bcycle;

static int bcycle_action(void *arg) {
    bcycle *s = arg;
    int c = atomic_fetch_add(&s->actions, 1);
    if (c >= s->cycles) {
        atomic_fetch_add(&s->bad, 1);
        return 0;
    }
    if (atomic_load(&s->arrived[c]) != s->parties || atomic_load(&s->left[c]) != 0)
        atomic_fetch_add(&s->bad, 1);
    atomic_store(&s->action_tid[c], my_tid());
    return 0;
}

static int bcycle_run(bcycle *s) {
    for (int c = 0; c < s->cycles; c++) {
        atomic_fetch_add(&s->arrived[c], 1);
        int r = crew_barrier_wait(&s->barrier, c % 2 ? CREW_FOREVER : LONG_WAIT);
        if (r < 0) return r;
        if (r >= s->parties) return 1000 + r;
        if (atomic_load(&s->arrived[c]) != s->parties) atomic_fetch_add(&s->bad, 1);
        if (r == s->parties - 1 && atomic_load(&s->action_tid[c]) != my_tid())
            atomic_fetch_add(&s->bad, 1);
        atomic_fetch_add(&s->seen[c][r], 1);
        atomic_fetch_add(&s->left[c], 1);
    }
    return 0;
}

static bcycle *bcycle_new(int parties, unsigned flags) {
    bcycle *s = shm_map(sizeof *s); /* zeroed */
    s->parties = parties;
    s->cycles = (int)test_scaled(150);
    if (s->cycles > BC_MAX) s->cycles = BC_MAX;
    crew_barrier_options o = {.action = bcycle_action, .arg = s, .flags = flags};
    ASSERT_RC(crew_barrier_init(&s->barrier, (unsigned)parties, &o), 0);
    return s;
}

static void bcycle_check_and_free(bcycle *s) {
    assert_int_equal(atomic_load(&s->bad), 0);
    assert_int_equal(atomic_load(&s->actions), s->cycles);
    for (int c = 0; c < s->cycles; c++) {
        assert_int_equal(atomic_load(&s->left[c]), s->parties);
        for (int i = 0; i < s->parties; i++) assert_int_equal(atomic_load(&s->seen[c][i]), 1);
    }
    ASSERT_RC(crew_barrier_n_waiting(&s->barrier), 0);
    assert_false(crew_barrier_broken(&s->barrier));
    ASSERT_RC(crew_barrier_destroy(&s->barrier), 0);
    shm_unmap(s, sizeof *s);
}

typedef struct bcycle_thread {
    bcycle *s;
    int rc;
    pthread_t th;
} bcycle_thread;

static void *bcycle_thread_main(void *p) {
    bcycle_thread *t = p;
    t->rc = bcycle_run(t->s);
    return NULL;
}

static void barrier_cycles(unsigned flags) {
    bcycle *s = bcycle_new(BP_MAX, flags);
    assert_int_equal(crew_barrier_parties(&s->barrier), BP_MAX);
    bcycle_thread t[BP_MAX];
    for (int i = 0; i < BP_MAX; i++) {
        t[i] = (bcycle_thread){.s = s};
        th_start(&t[i].th, bcycle_thread_main, &t[i]);
    }
    for (int i = 0; i < BP_MAX; i++) th_join(t[i].th);
    for (int i = 0; i < BP_MAX; i++) ASSERT_RC(t[i].rc, 0);
    bcycle_check_and_free(s);
}
FLAG_VARIANTS(barrier_cycles)

/* Run one full cycle of `parties` helper threads and check the indices. */
static void barrier_full_cycle(crew_barrier *b, int parties) {
    waiter w[8];
    assert_true(parties <= 8);
    for (int i = 0; i < parties; i++) waiter_start(&w[i], op_barrier_wait, b, LONG_WAIT);
    unsigned seen = 0;
    for (int i = 0; i < parties; i++) {
        int r = waiter_join(&w[i]);
        if (r < 0 || r >= parties) {
            print_error("barrier wait returned %d (%s)\n", r, crew_err_name(r));
            fail();
        }
        seen |= 1u << r;
    }
    assert_int_equal(seen, (1u << parties) - 1);
    assert_false(crew_barrier_broken(b));
}

typedef struct action_ctl {
    _Atomic int calls;
    _Atomic int fail;          /* what the action returns */
} action_ctl;

#define ACTION_ERR (-77)

static int ctl_action(void *arg) {
    action_ctl *a = arg;
    atomic_fetch_add(&a->calls, 1);
    return atomic_load(&a->fail);
}

/* A failing action breaks the barrier: its thread gets the action's code, the
 * others CREW_EBROKEN, and so does everyone after until a reset. */
static void barrier_action_fails(unsigned flags) {
    action_ctl ctl;
    atomic_init(&ctl.calls, 0);
    atomic_init(&ctl.fail, ACTION_ERR);
    crew_barrier b;
    crew_barrier_options o = {.action = ctl_action, .arg = &ctl, .flags = flags};
    ASSERT_RC(crew_barrier_init(&b, 3, &o), 0);
    waiter w[3];
    for (int i = 0; i < 3; i++) waiter_start(&w[i], op_barrier_wait, &b, LONG_WAIT);
    int n_err = 0, n_broken = 0;
    for (int i = 0; i < 3; i++) {
        int r = waiter_join(&w[i]);
        if (r == ACTION_ERR) n_err++;
        else if (r == CREW_EBROKEN) n_broken++;
        else ASSERT_RC(r, CREW_EBROKEN);
    }
    assert_int_equal(n_err, 1);
    assert_int_equal(n_broken, 2);
    assert_int_equal(atomic_load(&ctl.calls), 1);
    assert_true(crew_barrier_broken(&b));
    ASSERT_RC(crew_barrier_wait(&b, 0), CREW_EBROKEN);
    double t0 = test_now();
    ASSERT_RC(crew_barrier_wait(&b, 5.0), CREW_EBROKEN);
    assert_true(test_now() - t0 < TIME_SLACK);
    ASSERT_RC(crew_barrier_n_waiting(&b), 0);

    ASSERT_RC(crew_barrier_reset(&b), 0);
    assert_false(crew_barrier_broken(&b));
    atomic_store(&ctl.fail, 0);
    barrier_full_cycle(&b, 3);
    assert_int_equal(atomic_load(&ctl.calls), 2);

    /* A positive return also breaks it, but would read as an index: every
     * waiter, the action's thread included, gets CREW_EBROKEN. */
    atomic_store(&ctl.fail, 1);
    for (int i = 0; i < 3; i++) waiter_start(&w[i], op_barrier_wait, &b, LONG_WAIT);
    for (int i = 0; i < 3; i++) ASSERT_RC(waiter_join(&w[i]), CREW_EBROKEN);
    assert_int_equal(atomic_load(&ctl.calls), 3);
    assert_true(crew_barrier_broken(&b));
    ASSERT_RC(crew_barrier_reset(&b), 0);
    ASSERT_RC(crew_barrier_destroy(&b), 0);
}
FLAG_VARIANTS(barrier_action_fails)

/* A waiter's timeout breaks the barrier for everyone. */
static void barrier_timeout(unsigned flags) {
    crew_barrier b;
    crew_barrier_options o = {.flags = flags};
    ASSERT_RC(crew_barrier_init(&b, 3, &o), 0);
    waiter w;
    waiter_start(&w, op_barrier_wait, &b, LONG_WAIT);
    bool waiting = TEST_WAIT_UNTIL(crew_barrier_n_waiting(&b) == 1, SETTLE);
    double t0 = test_now();
    int rc = crew_barrier_wait(&b, SHORT);
    double elapsed = test_now() - t0;
    ASSERT_RC(waiter_join(&w), CREW_EBROKEN);
    assert_true(waiting);
    ASSERT_RC(rc, CREW_ETIMEDOUT);
    ASSERT_ELAPSED(elapsed, SHORT);
    assert_true(crew_barrier_broken(&b));
    ASSERT_RC(crew_barrier_wait(&b, SHORT), CREW_EBROKEN);
    ASSERT_RC(crew_barrier_reset(&b), 0);
    assert_false(crew_barrier_broken(&b));
    barrier_full_cycle(&b, 3);
    ASSERT_RC(crew_barrier_destroy(&b), 0);

    /* A 0 timeout is a try: alone it times out and breaks the barrier... */
    ASSERT_RC(crew_barrier_init(&b, 2, &o), 0);
    ASSERT_RC(crew_barrier_wait(&b, 0), CREW_ETIMEDOUT);
    assert_true(crew_barrier_broken(&b));
    ASSERT_RC(crew_barrier_reset(&b), 0);
    /* ...and as the last arrival it completes the cycle. */
    waiter_start(&w, op_barrier_wait, &b, LONG_WAIT);
    waiting = TEST_WAIT_UNTIL(crew_barrier_n_waiting(&b) == 1, SETTLE);
    rc = waiting ? crew_barrier_wait(&b, 0) : crew_barrier_abort(&b);
    int other = waiter_join(&w);
    assert_true(waiting);
    ASSERT_RC(rc, 1);
    ASSERT_RC(other, 0);
    assert_false(crew_barrier_broken(&b));
    ASSERT_RC(crew_barrier_destroy(&b), 0);
}
FLAG_VARIANTS(barrier_timeout)

static void barrier_abort(unsigned flags) {
    crew_barrier b;
    crew_barrier_options o = {.flags = flags};
    ASSERT_RC(crew_barrier_init(&b, 3, &o), 0);
    assert_int_equal(crew_barrier_parties(&b), 3);
    ASSERT_RC(crew_barrier_n_waiting(&b), 0);
    waiter w[2];
    waiter_start(&w[0], op_barrier_wait, &b, LONG_WAIT);
    bool one = TEST_WAIT_UNTIL(crew_barrier_n_waiting(&b) == 1, SETTLE);
    waiter_start(&w[1], op_barrier_wait, &b, CREW_FOREVER);
    bool two = TEST_WAIT_UNTIL(crew_barrier_n_waiting(&b) == 2, SETTLE);
    bool broken_before = crew_barrier_broken(&b);
    ASSERT_RC(crew_barrier_abort(&b), 0);
    ASSERT_RC(waiter_join(&w[0]), CREW_EBROKEN);
    ASSERT_RC(waiter_join(&w[1]), CREW_EBROKEN);
    assert_true(one);
    assert_true(two);
    assert_false(broken_before);
    assert_true(crew_barrier_broken(&b));
    ASSERT_RC(crew_barrier_wait(&b, 0), CREW_EBROKEN);
    ASSERT_RC(crew_barrier_wait(&b, CREW_FOREVER), CREW_EBROKEN);
    ASSERT_RC(crew_barrier_abort(&b), 0);
    assert_true(crew_barrier_broken(&b));

    ASSERT_RC(crew_barrier_reset(&b), 0);
    assert_false(crew_barrier_broken(&b));
    ASSERT_RC(crew_barrier_n_waiting(&b), 0);
    barrier_full_cycle(&b, 3);
    barrier_full_cycle(&b, 3);
    ASSERT_RC(crew_barrier_destroy(&b), 0);
}
FLAG_VARIANTS(barrier_abort)

/* reset with threads waiting: they get CREW_EBROKEN, and the barrier is then
 * whole again, not broken. */
static void barrier_reset(unsigned flags) {
    crew_barrier b;
    crew_barrier_options o = {.flags = flags};
    ASSERT_RC(crew_barrier_init(&b, 3, &o), 0);
    waiter w[2];
    waiter_start(&w[0], op_barrier_wait, &b, LONG_WAIT);
    waiter_start(&w[1], op_barrier_wait, &b, LONG_WAIT);
    bool two = TEST_WAIT_UNTIL(crew_barrier_n_waiting(&b) == 2, SETTLE);
    ASSERT_RC(crew_barrier_reset(&b), 0);
    ASSERT_RC(waiter_join(&w[0]), CREW_EBROKEN);
    ASSERT_RC(waiter_join(&w[1]), CREW_EBROKEN);
    assert_true(two);
    assert_false(crew_barrier_broken(&b));
    ASSERT_RC(crew_barrier_n_waiting(&b), 0);
    barrier_full_cycle(&b, 3);
    /* reset of an idle barrier changes nothing. */
    ASSERT_RC(crew_barrier_reset(&b), 0);
    barrier_full_cycle(&b, 3);
    ASSERT_RC(crew_barrier_destroy(&b), 0);
}
FLAG_VARIANTS(barrier_reset)

/* CPython's test_reset and test_abort_and_reset, with BN threads: a reset
 * (or abort then reset) in the middle of a cycle frees the waiters with
 * CREW_EBROKEN, and the very next cycle, entered while they are still
 * leaving, passes for everyone. */
#define BN 4

typedef struct reset_run {
    crew_barrier b, b2;
    _Atomic int passed;        /* the cycle that must break, passed anyway */
    _Atomic int broken;        /* ... left with CREW_EBROKEN */
    _Atomic int last;          /* the final cycle, passed */
    _Atomic int errors;
    bool abort_first;
} reset_run;

static void reset_run_error(reset_run *r, int rc) {
    if (rc < 0 || rc >= BN) atomic_fetch_add(&r->errors, 1);
}

static void count_second_wait(reset_run *r) {
    int rc = crew_barrier_wait(&r->b, LONG_WAIT);
    if (rc == CREW_EBROKEN) atomic_fetch_add(&r->broken, 1);
    else atomic_fetch_add(&r->passed, 1);
}

static void *reset_run_main(void *p) {
    reset_run *r = p;
    int i = crew_barrier_wait(&r->b, LONG_WAIT);
    if (!r->abort_first) {
        reset_run_error(r, i);
        if (i == BN / 2) {
            /* Once the others wait in the second cycle, reset it. */
            if (!TEST_WAIT_UNTIL(crew_barrier_n_waiting(&r->b) == BN - 1, SETTLE))
                atomic_fetch_add(&r->errors, 1);
            if (crew_barrier_reset(&r->b) != 0) atomic_fetch_add(&r->errors, 1);
        } else {
            count_second_wait(r);
        }
    } else {
        if (i == CREW_EBROKEN) {
            /* The abort came right after the first cycle completed and reached
             * this thread before it saw the completion: it leaves broken, as
             * in CPython (whose test counts one BrokenBarrierError for either
             * wait). */
            atomic_fetch_add(&r->broken, 1);
        } else if (i == BN / 2) {
            reset_run_error(r, i);
            if (crew_barrier_abort(&r->b) != 0) atomic_fetch_add(&r->errors, 1);
        } else {
            reset_run_error(r, i);
            count_second_wait(r);
        }
        /* Everyone out of b before the reset, nobody back in before it. */
        int j = crew_barrier_wait(&r->b2, LONG_WAIT);
        reset_run_error(r, j);
        if (j == BN / 2 && crew_barrier_reset(&r->b) != 0) atomic_fetch_add(&r->errors, 1);
        reset_run_error(r, crew_barrier_wait(&r->b2, LONG_WAIT));
    }
    int rc = crew_barrier_wait(&r->b, LONG_WAIT);
    reset_run_error(r, rc);
    if (rc >= 0) atomic_fetch_add(&r->last, 1);
    return NULL;
}

static void barrier_reset_midway(bool abort_first, unsigned flags) {
    reset_run *r = shm_map(sizeof *r);
    r->abort_first = abort_first;
    crew_barrier_options o = {.flags = flags};
    ASSERT_RC(crew_barrier_init(&r->b, BN, &o), 0);
    ASSERT_RC(crew_barrier_init(&r->b2, BN, &o), 0);
    pthread_t t[BN];
    for (int i = 0; i < BN; i++) th_start(&t[i], reset_run_main, r);
    for (int i = 0; i < BN; i++) th_join(t[i]);
    assert_int_equal(atomic_load(&r->errors), 0);
    assert_int_equal(atomic_load(&r->passed), 0);
    assert_int_equal(atomic_load(&r->broken), BN - 1);
    assert_int_equal(atomic_load(&r->last), BN);
    assert_false(crew_barrier_broken(&r->b));
    ASSERT_RC(crew_barrier_destroy(&r->b), 0);
    ASSERT_RC(crew_barrier_destroy(&r->b2), 0);
    shm_unmap(r, sizeof *r);
}

static void barrier_reset_in_cycle(unsigned flags) { barrier_reset_midway(false, flags); }
FLAG_VARIANTS(barrier_reset_in_cycle)
static void barrier_abort_and_reset(unsigned flags) { barrier_reset_midway(true, flags); }
FLAG_VARIANTS(barrier_abort_and_reset)

static void barrier_single_party(unsigned flags) {
    action_ctl ctl;
    atomic_init(&ctl.calls, 0);
    atomic_init(&ctl.fail, 0);
    crew_barrier b;
    crew_barrier_options o = {.action = ctl_action, .arg = &ctl, .flags = flags};
    ASSERT_RC(crew_barrier_init(&b, 1, &o), 0);
    for (int i = 0; i < 5; i++) ASSERT_RC(crew_barrier_wait(&b, 0), 0);
    ASSERT_RC(crew_barrier_wait(&b, CREW_FOREVER), 0);
    assert_int_equal(atomic_load(&ctl.calls), 6);
    ASSERT_RC(crew_barrier_n_waiting(&b), 0);
    ASSERT_RC(crew_barrier_destroy(&b), 0);

    /* Without options. */
    ASSERT_RC(crew_barrier_init(&b, 1, NULL), 0);
    ASSERT_RC(crew_barrier_wait(&b, 0), 0);
    assert_int_equal(crew_barrier_parties(&b), 1);
    ASSERT_RC(crew_barrier_destroy(&b), 0);
}
FLAG_VARIANTS(barrier_single_party)

/* The action may look at its barrier: n_waiting, broken and parties are
 * snapshots (lock-free properties in Python). Run in a child so that a
 * deadlock fails in seconds instead of hanging the test. */
typedef struct query_action {
    crew_barrier b;
    unsigned flags;
    int n_waiting, parties;
    bool broken;
} query_action;

static int query_action_fn(void *arg) {
    query_action *q = arg;
    q->n_waiting = crew_barrier_n_waiting(&q->b);
    q->broken = crew_barrier_broken(&q->b);
    q->parties = crew_barrier_parties(&q->b);
    return 0;
}

static int child_action_queries(void *p) {
    query_action *q = p;
    q->parties = -1;
    crew_barrier_options o = {.action = query_action_fn, .arg = q, .flags = q->flags};
    CHILD_RC(crew_barrier_init(&q->b, 1, &o), 0);
    CHILD_RC(crew_barrier_wait(&q->b, LONG_WAIT), 0);
    CHILD_CHECK(q->n_waiting >= 0);
    CHILD_CHECK(!q->broken);
    CHILD_CHECK(q->parties == 1);
    CHILD_RC(crew_barrier_destroy(&q->b), 0);
    return 0;
}

static void barrier_action_queries(unsigned flags) {
    query_action *q = shm_map(sizeof *q);
    q->flags = flags;
    pid_t pid = fork_child(child_action_queries, q);
    int status = 0;
    pid_t r = 0;
    bool done = TEST_WAIT_UNTIL((r = waitpid(pid, &status, WNOHANG)) != 0, 5.0);
    if (!done) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
    }
    shm_unmap(q, sizeof *q);
    if (!done) {
        print_error("crew_barrier_wait did not return within 5 s: the action's call "
                    "to crew_barrier_n_waiting/broken deadlocked\n");
        fail();
    }
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}
FLAG_VARIANTS(barrier_action_queries)

static void barrier_destroy_busy(unsigned flags) {
    crew_barrier b;
    crew_barrier_options o = {.flags = flags};
    ASSERT_RC(crew_barrier_init(&b, 2, &o), 0);
    waiter w;
    waiter_start(&w, op_barrier_wait, &b, LONG_WAIT);
    bool waiting = TEST_WAIT_UNTIL(crew_barrier_n_waiting(&b) == 1, SETTLE);
    int destroy_rc = waiting ? crew_barrier_destroy(&b) : INT_MIN;
    ASSERT_RC(crew_barrier_abort(&b), 0);
    ASSERT_RC(waiter_join(&w), CREW_EBROKEN);
    assert_true(waiting);
    ASSERT_RC(destroy_rc, CREW_EBUSY);
    ASSERT_RC(crew_barrier_destroy(&b), 0);
}
FLAG_VARIANTS(barrier_destroy_busy)

static void test_barrier_invalid(void **state) {
    (void)state;
    crew_barrier b;
    ASSERT_RC(crew_barrier_init(NULL, 2, NULL), CREW_EINVAL);
    ASSERT_RC(crew_barrier_init(&b, 0, NULL), CREW_EINVAL);
    ASSERT_RC(crew_barrier_init(&b, 2, &(crew_barrier_options){.flags = 0x80}), CREW_EINVAL);
    ASSERT_RC(crew_barrier_destroy(NULL), CREW_EINVAL);
    ASSERT_RC(crew_barrier_wait(NULL, 0), CREW_EINVAL);
    ASSERT_RC(crew_barrier_reset(NULL), CREW_EINVAL);
    ASSERT_RC(crew_barrier_abort(NULL), CREW_EINVAL);
    ASSERT_RC(crew_barrier_parties(NULL), CREW_EINVAL);
    ASSERT_RC(crew_barrier_n_waiting(NULL), CREW_EINVAL);
    assert_false(crew_barrier_broken(NULL));

    ASSERT_RC(crew_barrier_init(&b, 2, NULL), 0);
    /* Bad timeouts are refused without breaking the barrier. */
    ASSERT_RC(crew_barrier_wait(&b, -1.0), CREW_EINVAL);
    ASSERT_RC(crew_barrier_wait(&b, NAN), CREW_EINVAL);
    assert_false(crew_barrier_broken(&b));
    ASSERT_RC(crew_barrier_n_waiting(&b), 0);
    assert_int_equal(crew_barrier_parties(&b), 2);
    barrier_full_cycle(&b, 2);
    ASSERT_RC(crew_barrier_destroy(&b), 0);
    ASSERT_RC(crew_barrier_wait(&b, 0), CREW_EINVAL);
    ASSERT_RC(crew_barrier_reset(&b), CREW_EINVAL);
    ASSERT_RC(crew_barrier_abort(&b), CREW_EINVAL);
    ASSERT_RC(crew_barrier_parties(&b), CREW_EINVAL);
    ASSERT_RC(crew_barrier_n_waiting(&b), CREW_EINVAL);
    ASSERT_RC(crew_barrier_destroy(&b), CREW_EINVAL);

    memset(&b, 0, sizeof b);
    ASSERT_RC(crew_barrier_wait(&b, 0), CREW_EINVAL);
    ASSERT_RC(crew_barrier_wait(&b, CREW_FOREVER), CREW_EINVAL);
    ASSERT_RC(crew_barrier_reset(&b), CREW_EINVAL);
    ASSERT_RC(crew_barrier_abort(&b), CREW_EINVAL);
    ASSERT_RC(crew_barrier_parties(&b), CREW_EINVAL);
    ASSERT_RC(crew_barrier_n_waiting(&b), CREW_EINVAL);
    ASSERT_RC(crew_barrier_destroy(&b), CREW_EINVAL);
}

/* ==================================================== between processes */

#define CHILDREN 3

/* A counter in shared memory incremented under a shared lock / rlock /
 * semaphore by the parent and CHILDREN children comes out exact. */
typedef struct shm_counter {
    crew_lock lock;
    crew_rlock rlock;
    crew_sem sem;
    long counter;
    long iters;
    int which;                 /* 0 lock, 1 rlock, 2 sem */
} shm_counter;

static int shm_counter_run(void *p) {
    shm_counter *s = p;
    for (long i = 0; i < s->iters; i++) {
        double timeout = i % 2 ? CREW_FOREVER : LONG_WAIT;
        switch (s->which) {
        case 0:
            if (i % 5 == 4) {
                int rc;
                while ((rc = crew_lock_acquire(&s->lock, 0)) == CREW_EBUSY) sched_yield();
                CHILD_RC(rc, 0);
            } else {
                CHILD_RC(crew_lock_acquire(&s->lock, timeout), 0);
            }
            s->counter++;
            CHILD_RC(crew_lock_release(&s->lock), 0);
            break;
        case 1:
            CHILD_RC(crew_rlock_acquire(&s->rlock, timeout), 0);
            CHILD_RC(crew_rlock_acquire(&s->rlock, 0), 0);
            s->counter++;
            CHILD_RC(crew_rlock_release(&s->rlock), 0);
            CHILD_RC(crew_rlock_release(&s->rlock), 0);
            break;
        default:
            CHILD_RC(crew_sem_acquire(&s->sem, timeout), 0);
            s->counter++;
            CHILD_RC(crew_sem_release(&s->sem, 1), 0);
            break;
        }
    }
    return 0;
}

static void shared_counter(int which) {
    shm_counter *s = shm_map(sizeof *s);
    ASSERT_RC(crew_lock_init(&s->lock, CREW_SHARED), 0);
    ASSERT_RC(crew_rlock_init(&s->rlock, CREW_SHARED), 0);
    ASSERT_RC(crew_sem_init_bounded(&s->sem, 1, CREW_SHARED), 0);
    s->which = which;
    s->iters = test_scaled(which == 0 ? 20000 : 10000);
    pid_t kids[CHILDREN];
    for (int i = 0; i < CHILDREN; i++) kids[i] = fork_child(shm_counter_run, s);
    int mine = shm_counter_run(s);
    for (int i = 0; i < CHILDREN; i++) reap_ok(kids[i]);
    assert_int_equal(mine, 0);
    assert_int_equal(s->counter, (CHILDREN + 1) * s->iters);
    assert_false(crew_lock_locked(&s->lock));
    ASSERT_RC(crew_sem_value(&s->sem), 1);
    ASSERT_RC(crew_lock_destroy(&s->lock), 0);
    ASSERT_RC(crew_rlock_destroy(&s->rlock), 0);
    ASSERT_RC(crew_sem_destroy(&s->sem), 0);
    shm_unmap(s, sizeof *s);
}

static void test_shared_lock_processes(void **state) {
    (void)state;
    shared_counter(0);
}
static void test_shared_rlock_processes(void **state) {
    (void)state;
    shared_counter(1);
}
static void test_shared_sem_processes(void **state) {
    (void)state;
    shared_counter(2);
}

/* What a child sees of a shared lock and rlock held by the parent. */
typedef struct shm_owned {
    crew_lock lock;
    crew_rlock rlock;
    _Atomic int phase;
} shm_owned;

static int child_probe_parent_locks(void *p) {
    shm_owned *s = p;
    CHILD_CHECK(crew_lock_locked(&s->lock));
    CHILD_RC(crew_lock_acquire(&s->lock, 0), CREW_EBUSY);
    double t0 = test_now();
    CHILD_RC(crew_lock_acquire(&s->lock, SHORT), CREW_ETIMEDOUT);
    double el = test_now() - t0;
    CHILD_CHECK(el >= SHORT - TIME_EPS && el < SHORT + TIME_SLACK);
    CHILD_RC(crew_lock_release(&s->lock), CREW_EPERM);
    CHILD_CHECK(crew_lock_locked(&s->lock));
    CHILD_CHECK(!crew_rlock_owned(&s->rlock));
    CHILD_RC(crew_rlock_acquire(&s->rlock, 0), CREW_EBUSY);
    CHILD_RC(crew_rlock_acquire(&s->rlock, SHORT), CREW_ETIMEDOUT);
    CHILD_RC(crew_rlock_release(&s->rlock), CREW_EPERM);
    return 0;
}

/* Take the lock, let the parent block on it, then release it. */
static int child_hold_then_release(void *p) {
    shm_owned *s = p;
    CHILD_RC(crew_lock_acquire(&s->lock, LONG_WAIT), 0);
    atomic_store(&s->phase, 1);
    CHILD_CHECK(TEST_WAIT_UNTIL(atomic_load(&s->phase) == 2, 60.0));
    pid_t parent = getppid();
    (void)TEST_WAIT_UNTIL(task_in_futex(parent, parent), SOFT_SETTLE);
    CHILD_RC(crew_lock_release(&s->lock), 0);
    return 0;
}

static void test_shared_lock_ownership(void **state) {
    (void)state;
    shm_owned *s = shm_map(sizeof *s);
    ASSERT_RC(crew_lock_init(&s->lock, CREW_SHARED), 0);
    ASSERT_RC(crew_rlock_init(&s->rlock, CREW_SHARED), 0);
    ASSERT_RC(crew_lock_acquire(&s->lock, CREW_FOREVER), 0);
    ASSERT_RC(crew_rlock_acquire(&s->rlock, CREW_FOREVER), 0);
    ASSERT_RC(crew_rlock_acquire(&s->rlock, CREW_FOREVER), 0);
    reap_ok(fork_child(child_probe_parent_locks, s));
    assert_true(crew_lock_locked(&s->lock));
    ASSERT_RC(crew_lock_release(&s->lock), 0);
    assert_true(crew_rlock_owned(&s->rlock));
    ASSERT_RC(crew_rlock_release(&s->rlock), 0);
    ASSERT_RC(crew_rlock_release(&s->rlock), 0);
    ASSERT_RC(crew_rlock_release(&s->rlock), CREW_EPERM);

    /* A child's release wakes the parent blocked in acquire. */
    atomic_store(&s->phase, 0);
    pid_t pid = fork_child(child_hold_then_release, s);
    bool held = TEST_WAIT_UNTIL(atomic_load(&s->phase) == 1, SETTLE);
    atomic_store(&s->phase, 2);
    int rc = crew_lock_acquire(&s->lock, LONG_WAIT);
    reap_ok(pid);
    assert_true(held);
    ASSERT_RC(rc, 0);
    ASSERT_RC(crew_lock_release(&s->lock), 0);
    ASSERT_RC(crew_lock_destroy(&s->lock), 0);
    ASSERT_RC(crew_rlock_destroy(&s->rlock), 0);
    shm_unmap(s, sizeof *s);
}

/* Semaphores between processes: a ping-pong of units, release(n) waking n
 * children, and the bound seen from a child. */
typedef struct shm_sems {
    crew_sem a, b, gate, bounded;
    long rounds;
} shm_sems;

static int child_sem_pong(void *p) {
    shm_sems *s = p;
    for (long i = 0; i < s->rounds; i++) {
        CHILD_RC(crew_sem_acquire(&s->a, LONG_WAIT), 0);
        CHILD_RC(crew_sem_release(&s->b, 1), 0);
    }
    return 0;
}

static int child_sem_gate(void *p) {
    shm_sems *s = p;
    CHILD_RC(crew_sem_acquire(&s->gate, LONG_WAIT), 0);
    /* Nobody takes from `bounded`: it stays at its bound for every child. */
    CHILD_RC(crew_sem_release(&s->bounded, 1), CREW_EOVERFLOW);
    CHILD_RC(crew_sem_value(&s->bounded), CHILDREN);
    return 0;
}

static void test_shared_sem_signalling(void **state) {
    (void)state;
    shm_sems *s = shm_map(sizeof *s);
    ASSERT_RC(crew_sem_init(&s->a, 0, CREW_SHARED), 0);
    ASSERT_RC(crew_sem_init(&s->b, 0, CREW_SHARED), 0);
    ASSERT_RC(crew_sem_init(&s->gate, 0, CREW_SHARED), 0);
    ASSERT_RC(crew_sem_init_bounded(&s->bounded, CHILDREN, CREW_SHARED), 0);
    s->rounds = test_scaled(2000);
    pid_t pong = fork_child(child_sem_pong, s);
    int bad = 0;
    for (long i = 0; i < s->rounds && !bad; i++) {
        bad = crew_sem_release(&s->a, 1) != 0 || crew_sem_acquire(&s->b, LONG_WAIT) != 0;
    }
    reap_ok(pong);
    assert_int_equal(bad, 0);
    ASSERT_RC(crew_sem_value(&s->a), 0);
    ASSERT_RC(crew_sem_value(&s->b), 0);

    pid_t kids[CHILDREN];
    for (int i = 0; i < CHILDREN; i++) kids[i] = fork_child(child_sem_gate, s);
    ASSERT_RC(crew_sem_release(&s->gate, CHILDREN), 0);
    for (int i = 0; i < CHILDREN; i++) reap_ok(kids[i]);
    ASSERT_RC(crew_sem_value(&s->gate), 0);
    ASSERT_RC(crew_sem_value(&s->bounded), CHILDREN);
    ASSERT_RC(crew_sem_acquire(&s->bounded, 0), 0);
    ASSERT_RC(crew_sem_value(&s->bounded), CHILDREN - 1);
    ASSERT_RC(crew_sem_destroy(&s->a), 0);
    ASSERT_RC(crew_sem_destroy(&s->b), 0);
    ASSERT_RC(crew_sem_destroy(&s->gate), 0);
    ASSERT_RC(crew_sem_destroy(&s->bounded), 0);
    shm_unmap(s, sizeof *s);
}

/* Events between processes: set in one wakes waiters in the others. */
typedef struct shm_events {
    crew_event go, back;
    _Atomic int woke;
} shm_events;

static int child_event_wait(void *p) {
    shm_events *s = p;
    CHILD_RC(crew_event_wait(&s->go, LONG_WAIT), 0);
    CHILD_CHECK(crew_event_is_set(&s->go));
    if (atomic_fetch_add(&s->woke, 1) + 1 == CHILDREN) CHILD_RC(crew_event_set(&s->back), 0);
    return 0;
}

static void test_shared_event_processes(void **state) {
    (void)state;
    shm_events *s = shm_map(sizeof *s);
    ASSERT_RC(crew_event_init(&s->go, CREW_SHARED), 0);
    ASSERT_RC(crew_event_init(&s->back, CREW_SHARED), 0);
    pid_t kids[CHILDREN];
    for (int i = 0; i < CHILDREN; i++) kids[i] = fork_child(child_event_wait, s);
    ASSERT_RC(crew_event_set(&s->go), 0);
    int rc = crew_event_wait(&s->back, LONG_WAIT);
    for (int i = 0; i < CHILDREN; i++) reap_ok(kids[i]);
    ASSERT_RC(rc, 0);
    assert_int_equal(atomic_load(&s->woke), CHILDREN);
    assert_true(crew_event_is_set(&s->back));
    ASSERT_RC(crew_event_destroy(&s->go), 0);
    ASSERT_RC(crew_event_destroy(&s->back), 0);
    shm_unmap(s, sizeof *s);
}

/* Conditions between processes: strict turn-taking among the parent and
 * CHILDREN children (every notify must reach another process), and
 * notify(1) waking exactly one of several waiting children. */
typedef struct shm_turns {
    crew_lock lock;
    crew_cond cond;
    long turn;                 /* under the condition's lock */
    long rounds;
    int procs;
    _Atomic int ready, woke;
} shm_turns;

typedef struct turn_pred {
    shm_turns *s;
    int me;
} turn_pred;

static bool my_turn(void *p) {
    turn_pred *t = p;
    return t->s->turn % t->s->procs == t->me;
}

static int turn_run(shm_turns *s, int me) {
    turn_pred tp = {s, me};
    CHILD_RC(crew_cond_acquire(&s->cond, LONG_WAIT), 0);
    for (long r = 0; r < s->rounds; r++) {
        CHILD_RC(crew_cond_wait_for(&s->cond, my_turn, &tp, LONG_WAIT), 0);
        CHILD_CHECK(s->turn % s->procs == me);
        s->turn++;
        CHILD_RC(crew_cond_notify_all(&s->cond), 0);
    }
    CHILD_RC(crew_cond_release(&s->cond), 0);
    return 0;
}

static int turn_child1(void *p) { return turn_run(p, 1); }
static int turn_child2(void *p) { return turn_run(p, 2); }

static int child_cond_wait_once(void *p) {
    shm_turns *s = p;
    CHILD_RC(crew_cond_acquire(&s->cond, LONG_WAIT), 0);
    atomic_fetch_add(&s->ready, 1);
    CHILD_RC(crew_cond_wait(&s->cond, LONG_WAIT), 0);
    atomic_fetch_add(&s->woke, 1);
    CHILD_RC(crew_cond_release(&s->cond), 0);
    return 0;
}

static void shared_cond(bool external_lock) {
    shm_turns *s = shm_map(sizeof *s);
    if (external_lock) {
        ASSERT_RC(crew_lock_init(&s->lock, CREW_SHARED), 0);
        ASSERT_RC(crew_cond_init(&s->cond, &s->lock, CREW_SHARED), 0);
    } else {
        ASSERT_RC(crew_cond_init(&s->cond, NULL, CREW_SHARED), 0);
    }
    s->procs = 3;
    s->rounds = test_scaled(500);
    pid_t k1 = fork_child(turn_child1, s);
    pid_t k2 = fork_child(turn_child2, s);
    int mine = turn_run(s, 0);
    reap_ok(k1);
    reap_ok(k2);
    assert_int_equal(mine, 0);
    assert_int_equal(s->turn, s->rounds * s->procs);

    pid_t kids[CHILDREN];
    for (int i = 0; i < CHILDREN; i++) kids[i] = fork_child(child_cond_wait_once, s);
    bool ready = TEST_WAIT_UNTIL(atomic_load(&s->ready) == CHILDREN, SETTLE);
    int n1 = ready ? crew_cond_acquire(&s->cond, LONG_WAIT) : INT_MIN;
    int n2 = ready ? crew_cond_notify(&s->cond, 1) : INT_MIN;
    int n3 = ready ? crew_cond_release(&s->cond) : INT_MIN;
    bool one = TEST_WAIT_UNTIL(atomic_load(&s->woke) == 1, SETTLE);
    bool more = TEST_WAIT_UNTIL(atomic_load(&s->woke) > 1, GRACE);
    int n4 = crew_cond_acquire(&s->cond, LONG_WAIT);
    int n5 = crew_cond_notify_all(&s->cond);
    int n6 = crew_cond_release(&s->cond);
    for (int i = 0; i < CHILDREN; i++) reap_ok(kids[i]);
    assert_true(ready);
    ASSERT_RC(n1, 0);
    ASSERT_RC(n2, 0);
    ASSERT_RC(n3, 0);
    ASSERT_RC(n4, 0);
    ASSERT_RC(n5, 0);
    ASSERT_RC(n6, 0);
    assert_true(one);
    assert_false(more);
    assert_int_equal(atomic_load(&s->woke), CHILDREN);
    ASSERT_RC(crew_cond_destroy(&s->cond), 0);
    if (external_lock) ASSERT_RC(crew_lock_destroy(&s->lock), 0);
    shm_unmap(s, sizeof *s);
}

/* A shared condition and its lock in one segment that two views map at
 * different addresses (as a named segment may be in two processes): the
 * condition finds its lock relative to itself. The child works only through
 * the second view. */
typedef struct shm_pair {
    crew_lock lock;
    crew_cond cond;
    int value;                 /* under the lock */
} shm_pair;

static bool pair_value_set(void *p) { return ((shm_pair *)p)->value != 0; }

static int child_pair_waiter(void *p) {
    shm_pair *b = p; /* the second view */
    CHILD_RC(crew_cond_acquire(&b->cond, LONG_WAIT), 0);
    CHILD_CHECK(crew_lock_locked(&b->lock));
    CHILD_RC(crew_cond_wait_for(&b->cond, pair_value_set, b, LONG_WAIT), 0);
    CHILD_CHECK(b->value == 42);
    b->value = 43;
    CHILD_RC(crew_cond_notify_all(&b->cond), 0);
    CHILD_RC(crew_cond_release(&b->cond), 0);
    return 0;
}

static bool pair_value_43(void *p) { return ((shm_pair *)p)->value == 43; }

static void test_shared_cond_two_views(void **state) {
    (void)state;
    int fd = memfd_create("crew-test-sync", MFD_CLOEXEC);
    assert_true(fd >= 0);
    size_t size = 4096;
    assert_int_equal(ftruncate(fd, (off_t)size), 0);
    shm_pair *a = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    shm_pair *b = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    assert_true(a != MAP_FAILED && b != MAP_FAILED && a != b);
    ASSERT_RC(crew_lock_init(&a->lock, CREW_SHARED), 0);
    ASSERT_RC(crew_cond_init(&a->cond, &a->lock, CREW_SHARED), 0);

    /* In this process already: the condition seen through b uses b's lock,
     * which is a's. */
    ASSERT_RC(crew_cond_acquire(&b->cond, 0), 0);
    assert_true(crew_lock_locked(&a->lock));
    ASSERT_RC(crew_lock_acquire(&a->lock, 0), CREW_EDEADLK);
    ASSERT_RC(crew_cond_wait(&b->cond, 0.01), CREW_ETIMEDOUT);
    ASSERT_RC(crew_cond_release(&b->cond), 0);
    assert_false(crew_lock_locked(&a->lock));

    pid_t pid = fork_child(child_pair_waiter, b);
    ASSERT_RC(crew_cond_acquire(&a->cond, LONG_WAIT), 0);
    a->value = 42;
    ASSERT_RC(crew_cond_notify_all(&a->cond), 0);
    int rc = crew_cond_wait_for(&a->cond, pair_value_43, a, LONG_WAIT);
    ASSERT_RC(crew_cond_release(&a->cond), 0);
    reap_ok(pid);
    ASSERT_RC(rc, 0);
    ASSERT_RC(crew_cond_destroy(&a->cond), 0);
    ASSERT_RC(crew_lock_destroy(&a->lock), 0);
    assert_int_equal(munmap(a, size), 0);
    assert_int_equal(munmap(b, size), 0);
}

static void test_shared_cond_own_processes(void **state) {
    (void)state;
    shared_cond(false);
}
static void test_shared_cond_lock_processes(void **state) {
    (void)state;
    shared_cond(true);
}

/* A barrier between processes, with its action. */
static int child_bcycle(void *p) { return bcycle_run(p) == 0 ? 0 : 1; }

static void test_shared_barrier_processes(void **state) {
    (void)state;
    enum { PROCS = 3 };
    bcycle *s = bcycle_new(PROCS, CREW_SHARED);
    pid_t kids[PROCS - 1];
    for (int i = 0; i < PROCS - 1; i++) kids[i] = fork_child(child_bcycle, s);
    int mine = bcycle_run(s);
    for (int i = 0; i < PROCS - 1; i++) reap_ok(kids[i]);
    ASSERT_RC(mine, 0);
    bcycle_check_and_free(s);
}

/* A child waiting in a shared barrier gets CREW_EBROKEN when the parent
 * aborts it. */
typedef struct shm_barrier1 {
    crew_barrier b;
} shm_barrier1;

static int child_barrier_broken(void *p) {
    shm_barrier1 *s = p;
    CHILD_RC(crew_barrier_wait(&s->b, LONG_WAIT), CREW_EBROKEN);
    return 0;
}

static void test_shared_barrier_abort(void **state) {
    (void)state;
    shm_barrier1 *s = shm_map(sizeof *s);
    ASSERT_RC(crew_barrier_init(&s->b, 3, &(crew_barrier_options){.flags = CREW_SHARED}), 0);
    pid_t k1 = fork_child(child_barrier_broken, s);
    pid_t k2 = fork_child(child_barrier_broken, s);
    bool two = TEST_WAIT_UNTIL(crew_barrier_n_waiting(&s->b) == 2, SETTLE);
    ASSERT_RC(crew_barrier_abort(&s->b), 0);
    reap_ok(k1);
    reap_ok(k2);
    assert_true(two);
    assert_true(crew_barrier_broken(&s->b));
    ASSERT_RC(crew_barrier_reset(&s->b), 0);
    ASSERT_RC(crew_barrier_destroy(&s->b), 0);
    shm_unmap(s, sizeof *s);
}

/* ============================================================ owner death */

typedef struct shm_death {
    crew_lock lock;
    crew_rlock rlock;
    crew_cond cond;
    _Atomic int held;
} shm_death;

static int child_die_holding_lock(void *p) {
    shm_death *s = p;
    CHILD_RC(crew_lock_acquire(&s->lock, LONG_WAIT), 0);
    return 0; /* _exit with the lock held */
}

static int child_hold_lock_forever(void *p) {
    shm_death *s = p;
    CHILD_RC(crew_lock_acquire(&s->lock, LONG_WAIT), 0);
    atomic_store(&s->held, 1);
    for (;;) pause();
}

static int child_die_holding_rlock(void *p) {
    shm_death *s = p;
    CHILD_RC(crew_rlock_acquire(&s->rlock, LONG_WAIT), 0);
    CHILD_RC(crew_rlock_acquire(&s->rlock, LONG_WAIT), 0);
    return 0;
}

typedef struct killer {
    pid_t victim;
    int main_tid;
    pthread_t th;
} killer;

static void *killer_main(void *p) {
    killer *k = p;
    /* Better coverage if the parent is asleep in acquire; not required. */
    (void)TEST_WAIT_UNTIL(task_in_futex(getpid(), k->main_tid), SOFT_SETTLE);
    kill(k->victim, SIGKILL);
    return NULL;
}

static void test_owner_death_lock(void **state) {
    (void)state;
    shm_death *s = shm_map(sizeof *s);
    ASSERT_RC(crew_lock_init(&s->lock, CREW_SHARED), 0);

    /* The holder exits; the next acquire learns of it and owns the lock. */
    reap_ok(fork_child(child_die_holding_lock, s));
    ASSERT_RC(crew_lock_acquire(&s->lock, 5.0), CREW_EOWNERDEAD);
    assert_true(crew_lock_locked(&s->lock));
    ASSERT_RC(crew_lock_release(&s->lock), 0);
    assert_false(crew_lock_locked(&s->lock));
    ASSERT_RC(crew_lock_acquire(&s->lock, 0), 0);
    ASSERT_RC(crew_lock_release(&s->lock), 0);

    /* Again, noticed by a try. */
    reap_ok(fork_child(child_die_holding_lock, s));
    ASSERT_RC(crew_lock_acquire(&s->lock, 0), CREW_EOWNERDEAD);
    ASSERT_RC(crew_lock_release(&s->lock), 0);

    /* The holder is killed while the parent is blocked in acquire. */
    atomic_store(&s->held, 0);
    pid_t pid = fork_child(child_hold_lock_forever, s);
    bool held = TEST_WAIT_UNTIL(atomic_load(&s->held) == 1, SETTLE);
    if (!held) kill(pid, SIGKILL);
    killer k = {.victim = pid, .main_tid = my_tid()};
    th_start(&k.th, killer_main, &k);
    int rc = crew_lock_acquire(&s->lock, LONG_WAIT);
    th_join(k.th);
    int st = reap(pid);
    assert_true(held);
    ASSERT_RC(rc, CREW_EOWNERDEAD);
    assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    ASSERT_RC(crew_lock_release(&s->lock), 0);
    ASSERT_RC(crew_lock_acquire(&s->lock, 0), 0);
    ASSERT_RC(crew_lock_release(&s->lock), 0);
    ASSERT_RC(crew_lock_destroy(&s->lock), 0);
    shm_unmap(s, sizeof *s);
}

static void test_owner_death_rlock(void **state) {
    (void)state;
    shm_death *s = shm_map(sizeof *s);
    ASSERT_RC(crew_rlock_init(&s->rlock, CREW_SHARED), 0);
    reap_ok(fork_child(child_die_holding_rlock, s));
    /* Handed over held once, whatever the dead holder's depth. */
    ASSERT_RC(crew_rlock_acquire(&s->rlock, 5.0), CREW_EOWNERDEAD);
    assert_true(crew_rlock_owned(&s->rlock));
    ASSERT_RC(crew_rlock_release(&s->rlock), 0);
    assert_false(crew_rlock_owned(&s->rlock));
    ASSERT_RC(crew_rlock_release(&s->rlock), CREW_EPERM);
    ASSERT_RC(crew_rlock_acquire(&s->rlock, 0), 0);
    ASSERT_RC(crew_rlock_acquire(&s->rlock, 0), 0);
    ASSERT_RC(crew_rlock_release(&s->rlock), 0);
    ASSERT_RC(crew_rlock_release(&s->rlock), 0);
    ASSERT_RC(crew_rlock_destroy(&s->rlock), 0);
    shm_unmap(s, sizeof *s);
}

/* A thread that returns holding a shared lock is a dead owner too. */
static void test_owner_death_thread(void **state) {
    (void)state;
    crew_lock l;
    crew_rlock r;
    waiter w;
    ASSERT_RC(crew_lock_init(&l, CREW_SHARED), 0);
    ASSERT_RC(crew_rlock_init(&r, CREW_SHARED), 0);
    waiter_start(&w, op_lock_acquire, &l, LONG_WAIT);
    ASSERT_RC(waiter_join(&w), 0);
    waiter_start(&w, op_rlock_acquire, &r, LONG_WAIT);
    ASSERT_RC(waiter_join(&w), 0);
    ASSERT_RC(crew_lock_acquire(&l, 5.0), CREW_EOWNERDEAD);
    ASSERT_RC(crew_lock_release(&l), 0);
    ASSERT_RC(crew_lock_acquire(&l, 0), 0);
    ASSERT_RC(crew_lock_release(&l), 0);
    ASSERT_RC(crew_rlock_acquire(&r, 5.0), CREW_EOWNERDEAD);
    assert_true(crew_rlock_owned(&r));
    ASSERT_RC(crew_rlock_release(&r), 0);
    ASSERT_RC(crew_rlock_release(&r), CREW_EPERM);
    ASSERT_RC(crew_lock_destroy(&l), 0);
    ASSERT_RC(crew_rlock_destroy(&r), 0);
}

/* A condition whose lock's holder dies: acquiring reports it, and so does a
 * wait that has to re-acquire the lock after the notifier died holding it. */
static int child_die_holding_cond(void *p) {
    shm_death *s = p;
    CHILD_RC(crew_cond_acquire(&s->cond, LONG_WAIT), 0);
    return 0;
}

static int child_notify_and_die(void *p) {
    shm_death *s = p;
    CHILD_CHECK(TEST_WAIT_UNTIL(atomic_load(&s->held) == 1, 60.0));
    /* Acquired only once the parent waits (it held the lock until then). */
    CHILD_RC(crew_cond_acquire(&s->cond, LONG_WAIT), 0);
    CHILD_RC(crew_cond_notify(&s->cond, 1), 0);
    return 0;
}

static void owner_death_cond(bool external_lock) {
    shm_death *s = shm_map(sizeof *s);
    if (external_lock) {
        ASSERT_RC(crew_lock_init(&s->lock, CREW_SHARED), 0);
        ASSERT_RC(crew_cond_init(&s->cond, &s->lock, CREW_SHARED), 0);
    } else {
        ASSERT_RC(crew_cond_init(&s->cond, NULL, CREW_SHARED), 0);
    }
    reap_ok(fork_child(child_die_holding_cond, s));
    ASSERT_RC(crew_cond_acquire(&s->cond, 5.0), CREW_EOWNERDEAD);
    ASSERT_RC(crew_cond_release(&s->cond), 0);
    ASSERT_RC(crew_cond_release(&s->cond), CREW_EPERM);

    atomic_store(&s->held, 0);
    pid_t pid = fork_child(child_notify_and_die, s);
    ASSERT_RC(crew_cond_acquire(&s->cond, LONG_WAIT), 0);
    atomic_store(&s->held, 1);
    int rc = crew_cond_wait(&s->cond, LONG_WAIT);
    reap_ok(pid);
    ASSERT_RC(rc, CREW_EOWNERDEAD);
    if (external_lock) assert_true(crew_lock_locked(&s->lock));
    ASSERT_RC(crew_cond_release(&s->cond), 0);
    ASSERT_RC(crew_cond_release(&s->cond), CREW_EPERM);
    ASSERT_RC(crew_cond_acquire(&s->cond, 0), 0);
    ASSERT_RC(crew_cond_release(&s->cond), 0);
    ASSERT_RC(crew_cond_destroy(&s->cond), 0);
    if (external_lock) ASSERT_RC(crew_lock_destroy(&s->lock), 0);
    shm_unmap(s, sizeof *s);
}

static void test_owner_death_cond_own(void **state) {
    (void)state;
    owner_death_cond(false);
}
static void test_owner_death_cond_lock(void **state) {
    (void)state;
    owner_death_cond(true);
}

/* ===================================================== private + fork */

/* Private objects copied by fork are the child's own and usable there when
 * only the forking thread held them. */
typedef struct private_objs {
    crew_lock lock;
    crew_rlock rlock;
    crew_sem sem;
    crew_event event;
} private_objs;

static int child_private_copies(void *p) {
    private_objs *o = p;
    CHILD_CHECK(crew_lock_locked(&o->lock));
    CHILD_RC(crew_lock_release(&o->lock), 0);
    CHILD_RC(crew_lock_acquire(&o->lock, 0), 0);
    CHILD_RC(crew_lock_release(&o->lock), 0);
    CHILD_RC(crew_lock_destroy(&o->lock), 0);
    CHILD_RC(crew_sem_acquire(&o->sem, 0), 0);
    CHILD_RC(crew_sem_acquire(&o->sem, 0), CREW_EBUSY);
    CHILD_RC(crew_sem_destroy(&o->sem), 0);
    CHILD_RC(crew_event_set(&o->event), 0);
    CHILD_RC(crew_event_wait(&o->event, 0), 0);
    CHILD_RC(crew_event_destroy(&o->event), 0);
    return 0;
}

static int child_private_rlock(void *p) {
    private_objs *o = p;
    CHILD_CHECK(crew_rlock_owned(&o->rlock));
    CHILD_RC(crew_rlock_acquire(&o->rlock, 0), 0);
    CHILD_RC(crew_rlock_release(&o->rlock), 0);
    CHILD_RC(crew_rlock_release(&o->rlock), 0);
    CHILD_RC(crew_rlock_release(&o->rlock), 0);
    CHILD_RC(crew_rlock_release(&o->rlock), CREW_EPERM);
    CHILD_RC(crew_rlock_acquire(&o->rlock, 0), 0);
    CHILD_RC(crew_rlock_release(&o->rlock), 0);
    CHILD_RC(crew_rlock_destroy(&o->rlock), 0);
    return 0;
}

static void test_fork_private_copies(void **state) {
    (void)state;
    private_objs o;
    ASSERT_RC(crew_lock_init(&o.lock, 0), 0);
    ASSERT_RC(crew_rlock_init(&o.rlock, 0), 0);
    ASSERT_RC(crew_sem_init(&o.sem, 1, 0), 0);
    ASSERT_RC(crew_event_init(&o.event, 0), 0);
    ASSERT_RC(crew_lock_acquire(&o.lock, 0), 0);
    reap_ok(fork_child(child_private_copies, &o));
    /* The parent's copies are untouched by what the child did. */
    assert_true(crew_lock_locked(&o.lock));
    ASSERT_RC(crew_sem_value(&o.sem), 1);
    assert_false(crew_event_is_set(&o.event));
    ASSERT_RC(crew_lock_release(&o.lock), 0);
    ASSERT_RC(crew_lock_destroy(&o.lock), 0);
    ASSERT_RC(crew_sem_destroy(&o.sem), 0);
    ASSERT_RC(crew_event_destroy(&o.event), 0);
    ASSERT_RC(crew_rlock_destroy(&o.rlock), 0);
}

/* A private rlock held (twice) by the forking thread stays that thread's in
 * the child, which is that thread there (as pthread_self() and Python's
 * RLock say). */
static void test_fork_private_rlock_held(void **state) {
    (void)state;
    private_objs o;
    ASSERT_RC(crew_rlock_init(&o.rlock, 0), 0);
    ASSERT_RC(crew_rlock_acquire(&o.rlock, 0), 0);
    ASSERT_RC(crew_rlock_acquire(&o.rlock, 0), 0);
    pid_t pid = fork_child(child_private_rlock, &o);
    int st = reap(pid);
    assert_true(crew_rlock_owned(&o.rlock));
    ASSERT_RC(crew_rlock_release(&o.rlock), 0);
    ASSERT_RC(crew_rlock_release(&o.rlock), 0);
    ASSERT_RC(crew_rlock_destroy(&o.rlock), 0);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
}

/* ================================================================== main */

/* Each test runs in a process of its own: see test_run_forked. */
int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shared_lock_processes),
        cmocka_unit_test(test_shared_rlock_processes),
        cmocka_unit_test(test_shared_sem_processes),
        cmocka_unit_test(test_shared_lock_ownership),
        cmocka_unit_test(test_shared_sem_signalling),
        cmocka_unit_test(test_shared_event_processes),
        cmocka_unit_test(test_shared_cond_own_processes),
        cmocka_unit_test(test_shared_cond_lock_processes),
        cmocka_unit_test(test_shared_cond_two_views),
        cmocka_unit_test(test_shared_barrier_processes),
        cmocka_unit_test(test_shared_barrier_abort),
        cmocka_unit_test(test_owner_death_rlock),
        cmocka_unit_test(test_owner_death_cond_own),
        cmocka_unit_test(test_owner_death_cond_lock),
        cmocka_unit_test(test_fork_private_copies),
        cmocka_unit_test(test_fork_private_rlock_held),
        cmocka_unit_test(test_owner_death_lock),
        cmocka_unit_test(test_owner_death_thread),

        BOTH(lock_basic),
        BOTH(lock_try_and_timeout),
        BOTH(lock_release_wakes_waiter),
        BOTH(lock_release_by_other_thread),
        BOTH(lock_destroy_busy),
        cmocka_unit_test(test_lock_invalid),
        BOTH(lock_mutual_exclusion),

        BOTH(rlock_recursion),
        BOTH(rlock_other_thread),
        BOTH(rlock_blocked_waiter),
        BOTH(rlock_mutual_exclusion),
        cmocka_unit_test(test_rlock_invalid),

        BOTH(sem_counts),
        BOTH(sem_limits),
        BOTH(sem_bounded),
        BOTH(sem_release_n_wakes),
        BOTH(sem_admits_at_most_value),
        BOTH(sem_producer_consumer),
        BOTH(sem_destroy_busy),
        cmocka_unit_test(test_sem_invalid),

        BOTH(event_basic),
        BOTH(event_set_wakes_all),
        BOTH(event_set_then_clear),
        BOTH(event_ping_pong),
        BOTH(event_destroy_busy),
        cmocka_unit_test(test_event_invalid),

        COND_ALL(cond_notify_n),
        COND_ALL(cond_notify_all),
        COND_ALL(cond_no_stolen_wakeup),
        COND_ALL(cond_wait_timeout),
        COND_ALL(cond_wait_for),
        COND_ALL(cond_wait_for_one_deadline),
        COND_ALL(cond_unowned),
        cmocka_unit_test(test_cond_notify_zero),
        REENTRANT_ALL(cond_rlock_levels),
        COND_ALL(cond_destroy_busy),
        BOTH(cond_bounded_buffer),
        cmocka_unit_test(test_cond_invalid),

        BOTH(barrier_cycles),
        BOTH(barrier_action_fails),
        BOTH(barrier_timeout),
        BOTH(barrier_abort),
        BOTH(barrier_reset),
        BOTH(barrier_reset_in_cycle),
        BOTH(barrier_abort_and_reset),
        BOTH(barrier_single_party),
        BOTH(barrier_action_queries),
        BOTH(barrier_destroy_busy),
        cmocka_unit_test(test_barrier_invalid),
    };
    return test_run_forked("test_sync", tests, sizeof tests / sizeof tests[0]);
}
