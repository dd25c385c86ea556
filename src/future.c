/* crew_future.
 *
 * The state machine lives in one atomic word, `state` (state in the low
 * byte, WAITING and LISTENERS flags above), and every move is a CAS on it,
 * so the common life of a future (create, set_running, complete, get, free)
 * takes no lock:
 *   PENDING -> RUNNING            set_running
 *   PENDING -> CANCELLED          cancel (races set_running: one CAS wins)
 *   PENDING|RUNNING -> COMPLETING a completer claims it, writes the outcome,
 *   COMPLETING -> FINISHED        then publishes it (release by the CAS)
 * get() sleeps on the word itself (futex) after setting WAITING; the
 * completing CAS clears the bit and its author wakes the sleepers.
 *
 * A small internal mutex guards the callback list and the registered
 * waiters. Adding one sets LISTENERS under the mutex, unless the future is
 * complete (then the caller acts at once); a completion that sees the flag
 * takes the mutex to collect them, after which it notifies every waiter and
 * runs the callbacks in order, in the completing thread.
 *
 * Waiting on many (wait, the as_completed iterator) follows CPython: a
 * `waiter` is registered on every pending future; a completing future calls
 * waiter_notify() under its own lock, which takes the waiter's lock (so the
 * lock order is always future, then waiter). The owner of a waiter removes
 * its registrations, one future lock at a time, before it frees the waiter;
 * after that no future can reach it.
 */
#include "crew/future.h"

#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "crew/clock.h"
#include "crew/error.h"
#include "block_cache.h"
#include "crew/sync.h"
#include "deadline.h"
#include "future_internal.h"
#include "sync/sync_internal.h"

/* COMPLETING: a completer has claimed the future and is writing its outcome
 * (still "running" to everyone else). */
enum { PENDING, RUNNING, FINISHED, CANCELLED, COMPLETING };

typedef struct waiter {
    crew_lock lock;
    crew_cond cond;            /* over `lock`: a registered future completed */
    size_t completed;          /* futures complete (under `lock`) */
    size_t failed;             /* of which finished with an error */
    size_t *ready;             /* iterator: indices completed, not yet returned */
    size_t ready_head, ready_tail;
} waiter;

typedef struct registration {
    waiter *w;
    size_t index;
    struct registration *next;
} registration;

typedef struct callback {
    crew_future_callback cb;
    void *arg;
    struct callback *next;
} callback;

/* `state` holds the state in its low byte, WAITING when a thread sleeps on
 * it (futex) in get, and LISTENERS once a callback or waiter registration
 * was added (so that completion takes the mutex only then). */
#define STATE_MASK 0xffu
#define WAITING 0x100u
#define LISTENERS 0x200u

struct crew_future {
    _Atomic int refs;
    _Atomic uint32_t state;
    _Atomic uint32_t mutex;    /* crew__mutex: guards everything below */
    int error;                 /* FINISHED: 0 or the error code */
    callback *callbacks, *callbacks_tail;
    registration *waiters;
    size_t result_size;
    size_t block_size;         /* bytes allocated, this header included */
    _Alignas(max_align_t) unsigned char result[];
};

CREW__TLS crew__future_help_fn crew__future_helper;

static void lock_f(crew_future *f) { crew__mutex_lock(&f->mutex, false); }
static void unlock_f(crew_future *f) { crew__mutex_unlock(&f->mutex, false); }
static int state_of(const crew_future *f) {
    return (int)(atomic_load(&((crew_future *)f)->state) & STATE_MASK);
}

static bool complete_state(int s) { return s == FINISHED || s == CANCELLED; }

/* Under the mutex: set LISTENERS unless the future is complete; returns
 * whether it was set (false: complete, so the caller acts at once). */
static bool mark_listeners(crew_future *f) {
    uint32_t word = atomic_load(&f->state);
    for (;;) {
        if (complete_state((int)(word & STATE_MASK))) return false;
        if (word & LISTENERS) return true;
        if (atomic_compare_exchange_weak(&f->state, &word, word | LISTENERS)) return true;
    }
}

static size_t round_up_align(size_t n) {
    return (n + _Alignof(max_align_t) - 1) & ~(size_t)(_Alignof(max_align_t) - 1);
}

static size_t block_size(const crew_future *f) { return f->block_size; }

int crew__future_create_ex(crew_future **out, size_t result_size, size_t extra, void **extra_out, int refs) {
    if (out == NULL || result_size > ((size_t)1 << 40) || extra > ((size_t)1 << 40)) return CREW_EINVAL;
    size_t rs = round_up_align(result_size);
    size_t size = sizeof(crew_future) + rs + extra;
    crew_future *f = crew__block_alloc(size);
    if (!f) return CREW_ENOMEM;
    memset(f, 0, sizeof *f);
    if (extra_out) *extra_out = f->result + rs;
    atomic_init(&f->refs, refs);
    atomic_init(&f->state, PENDING);
    atomic_init(&f->mutex, 0);
    f->result_size = result_size;
    f->block_size = size;
    *out = f;
    return 0;
}

int crew_future_create(crew_future **out, size_t result_size) {
    return crew__future_create_ex(out, result_size, 0, NULL, 1);
}

void *crew__future_result(crew_future *future) { return future->result; }

crew_future *crew_future_ref(crew_future *future) {
    if (future) atomic_fetch_add_explicit(&future->refs, 1, memory_order_relaxed);
    return future;
}

void crew_future_free(crew_future *future) {
    if (!future || atomic_fetch_sub_explicit(&future->refs, 1, memory_order_acq_rel) != 1) return;
    for (callback *c = future->callbacks; c;) {
        callback *next = c->next;
        free(c);
        c = next;
    }
    for (registration *r = future->waiters; r;) {
        registration *next = r->next;
        free(r);
        r = next;
    }
    crew__block_free(future, block_size(future));
}

/* --------------------------------------------------------------- waiters */

static void waiter_init(waiter *w) {
    memset(w, 0, sizeof *w);
    crew_lock_init(&w->lock, 0);
    crew_cond_init(&w->cond, &w->lock, 0);
}

static void waiter_destroy(waiter *w) {
    crew_cond_destroy(&w->cond);
    crew_lock_destroy(&w->lock);
}

/* A future this waiter is registered on completed. Called with the future's
 * lock held. */
static void waiter_notify(waiter *w, size_t index, bool failed) {
    crew_lock_acquire(&w->lock, CREW_FOREVER);
    w->completed++;
    if (failed) w->failed++;
    if (w->ready) w->ready[w->ready_tail++] = index;
    crew_cond_notify_all(&w->cond);
    crew_lock_release(&w->lock);
}

/* Register w on f unless f is complete; returns whether f was complete (and
 * counted in w then). CREW_ENOMEM is reported as -1. */
static int waiter_add(waiter *w, crew_future *f, size_t index) {
    int rc = 0;
    lock_f(f);
    if (!mark_listeners(f)) {
        int state = state_of(f);
        crew_lock_acquire(&w->lock, CREW_FOREVER);
        w->completed++;
        if (state == FINISHED && f->error != 0) w->failed++;
        if (w->ready) w->ready[w->ready_tail++] = index;
        crew_lock_release(&w->lock);
        rc = 1;
    } else {
        registration *r = malloc(sizeof *r);
        if (!r) {
            rc = -1;
        } else {
            *r = (registration){w, index, f->waiters};
            f->waiters = r;
        }
    }
    unlock_f(f);
    return rc;
}

static void waiter_remove(waiter *w, crew_future *f) {
    lock_f(f);
    for (registration **p = &f->waiters; *p; p = &(*p)->next) {
        if ((*p)->w == w) {
            registration *r = *p;
            *p = r->next;
            free(r);
            break;
        }
    }
    unlock_f(f);
}

/* ------------------------------------------------------------ completing */

/* Move a PENDING or RUNNING future (per `from_ok`) to `to`; runs the
 * completion protocol. CREW_EINVAL if the state does not allow it. */
/* The future has just become complete (old: the state word before): hand
 * the listeners their notice, wake sleepers in get, run the callbacks. */
static void completed(crew_future *f, uint32_t old, bool failed) {
    callback *cbs = NULL;
    if (old & LISTENERS) {
        /* Registrations were added under the mutex, before the flag was
         * seen by the completing CAS: taking the mutex waits for them. */
        lock_f(f);
        cbs = f->callbacks;
        f->callbacks = f->callbacks_tail = NULL;
        for (registration *r = f->waiters; r; r = r->next) waiter_notify(r->w, r->index, failed);
        unlock_f(f);
    }
    if (old & WAITING) crew__futex_wake(&f->state, INT_MAX, false);
    while (cbs) {
        callback *next = cbs->next;
        cbs->cb(f, cbs->arg);
        free(cbs);
        cbs = next;
    }
}

/* Move a PENDING or RUNNING future to FINISHED: claim it (COMPLETING), write
 * the outcome, publish FINISHED. `result` NULL with error 0: the result is
 * in place already. CREW_EINVAL if it was complete or being completed. */
static int finish(crew_future *f, int error, const void *result) {
    uint32_t word = atomic_load(&f->state);
    for (;;) {
        int state = (int)(word & STATE_MASK);
        if (state != PENDING && state != RUNNING) return CREW_EINVAL;
        if (atomic_compare_exchange_weak(&f->state, &word, (word & ~STATE_MASK) | COMPLETING)) break;
    }
    f->error = error;
    if (error == 0 && f->result_size && result) memcpy(f->result, result, f->result_size);
    /* Publishes the outcome; clears WAITING (whose sleepers we wake). */
    word = atomic_load(&f->state);
    while (!atomic_compare_exchange_weak(&f->state, &word, (word & ~(STATE_MASK | WAITING)) | FINISHED)) {
    }
    completed(f, word, error != 0);
    return 0;
}

int crew_future_set_running(crew_future *future) {
    if (!future) return CREW_EINVAL;
    /* No lock: PENDING is left only by a CAS (here, or cancel's in
     * complete), so exactly one of them wins. */
    uint32_t word = atomic_load(&future->state);
    while ((word & STATE_MASK) == PENDING)
        if (atomic_compare_exchange_weak(&future->state, &word, (word & ~STATE_MASK) | RUNNING)) return 0;
    return (word & STATE_MASK) == CANCELLED ? CREW_ECANCELED : CREW_EINVAL;
}

int crew_future_set_result(crew_future *future, const void *result) {
    if (!future || (result == NULL && future->result_size != 0)) return CREW_EINVAL;
    return finish(future, 0, result);
}

int crew__future_finish(crew_future *future, int error) {
    if (state_of(future) != RUNNING || error > 0) return CREW_EINVAL;
    return finish(future, error, NULL);
}

int crew_future_set_error(crew_future *future, int code) {
    if (!future || code >= 0) return CREW_EINVAL;
    return finish(future, code, NULL);
}

int crew_future_cancel(crew_future *future) {
    if (!future) return CREW_EINVAL;
    /* Only PENDING can be cancelled; it races set_running's CAS only. */
    uint32_t word = atomic_load(&future->state);
    for (;;) {
        int state = (int)(word & STATE_MASK);
        if (state == CANCELLED) return 0;
        if (state != PENDING) return CREW_EBUSY;
        if (atomic_compare_exchange_weak(&future->state, &word, (word & ~(STATE_MASK | WAITING)) | CANCELLED))
            break;
    }
    completed(future, word, false);
    return 0;
}

/* --------------------------------------------------------------- waiting */

static bool future_ready(void *arg) { return crew_future_done(arg); }

/* Sleep on the state word until the future completes or d passes. */
static int sleep_until_done(crew_future *f, const crew__deadline *d) {
    for (;;) {
        uint32_t word = atomic_load(&f->state);
        int state = (int)(word & STATE_MASK);
        if (state == FINISHED || state == CANCELLED) return 0;
        if (!(word & WAITING) && !atomic_compare_exchange_weak(&f->state, &word, word | WAITING)) continue;
        if (crew__futex_wait(&f->state, word | WAITING, d, false) == -ETIMEDOUT && !crew_future_done(f))
            return CREW_ETIMEDOUT;
    }
}

int crew_future_get(crew_future *future, void *result, double timeout) {
    if (!future) return CREW_EINVAL;
    int rc = 0;
    if (!(timeout >= 0.0)) return CREW_EINVAL;
    if (!crew_future_done(future)) {
        crew__deadline d;
        rc = crew__deadline_init(&d, timeout);
        if (rc != 0) return rc;
        if (d.is_try) return CREW_ETIMEDOUT;
        if (crew__future_helper) rc = crew__future_helper(future_ready, future, &d);
        else rc = sleep_until_done(future, &d);
    }
    if (rc != 0) return rc;
    /* No lock: the outcome was written before the state became complete
     * (the seq_cst CAS in complete), and never changes after. */
    if (state_of(future) == CANCELLED) return CREW_ECANCELED;
    rc = future->error;
    if (rc == 0 && result && future->result_size) memcpy(result, future->result, future->result_size);
    return rc;
}

bool crew_future_done(const crew_future *future) {
    if (!future) return false;
    int s = state_of(future);
    return s == FINISHED || s == CANCELLED;
}

bool crew_future_running(const crew_future *future) {
    return future && (state_of(future) == RUNNING || state_of(future) == COMPLETING);
}

bool crew_future_cancelled(const crew_future *future) { return future && state_of(future) == CANCELLED; }

int crew_future_add_done_callback(crew_future *future, crew_future_callback cb, void *arg) {
    if (!future || !cb) return CREW_EINVAL;
    callback *c = malloc(sizeof *c);
    if (!c) return CREW_ENOMEM;
    *c = (callback){cb, arg, NULL};
    lock_f(future);
    if (mark_listeners(future)) {
        if (future->callbacks_tail) future->callbacks_tail->next = c;
        else future->callbacks = c;
        future->callbacks_tail = c;
        c = NULL;
    }
    unlock_f(future);
    if (c) { /* already complete: run it now */
        cb(future, arg);
        free(c);
    }
    return 0;
}

static bool wait_satisfied(const waiter *w, size_t n, crew_future_wait_mode mode) {
    switch (mode) {
    case CREW_FIRST_COMPLETED:
        return w->completed > 0;
    case CREW_FIRST_EXCEPTION:
        return w->failed > 0 || w->completed == n;
    default:
        return w->completed == n;
    }
}

typedef struct wait_pred {
    waiter *w;
    size_t n;
    crew_future_wait_mode mode;
} wait_pred;

static bool wait_ready(void *arg) {
    wait_pred *p = arg;
    crew_lock_acquire(&p->w->lock, CREW_FOREVER);
    bool ok = wait_satisfied(p->w, p->n, p->mode);
    crew_lock_release(&p->w->lock);
    return ok;
}

static bool iter_ready(void *arg) {
    waiter *w = arg;
    crew_lock_acquire(&w->lock, CREW_FOREVER);
    bool ok = w->ready_head != w->ready_tail;
    crew_lock_release(&w->lock);
    return ok;
}

int crew_future_wait(crew_future *const *futures, size_t n, crew_future_wait_mode mode, double timeout) {
    if (n > 0 && futures == NULL) return CREW_EINVAL;
    if (mode != CREW_ALL_COMPLETED && mode != CREW_FIRST_COMPLETED && mode != CREW_FIRST_EXCEPTION)
        return CREW_EINVAL;
    for (size_t i = 0; i < n; i++)
        if (futures[i] == NULL) return CREW_EINVAL;
    crew__deadline d;
    int rc = crew__deadline_init(&d, timeout);
    if (rc != 0) return rc;
    if (n == 0) return 0;
    if (mode == CREW_ALL_COMPLETED) {
        /* Every one must complete: wait for them in turn, with no
         * registration (what a pool's "submit N, wait all" needs to be
         * cheap). */
        for (size_t i = 0; i < n; i++) {
            if (crew_future_done(futures[i])) continue;
            if (d.is_try) return CREW_ETIMEDOUT;
            rc = crew__future_helper ? crew__future_helper(future_ready, futures[i], &d)
                                     : sleep_until_done(futures[i], &d);
            if (rc != 0) return rc;
        }
        return n > INT_MAX ? INT_MAX : (int)n;
    }
    waiter w;
    waiter_init(&w);
    size_t added = 0;
    for (; added < n; added++) {
        if (waiter_add(&w, futures[added], added) < 0) {
            rc = CREW_ENOMEM;
            break;
        }
    }
    if (rc == 0 && crew__future_helper && !d.is_try) {
        /* A pool worker: run other tasks until the condition holds. */
        wait_pred p = {&w, n, mode};
        rc = crew__future_helper(wait_ready, &p, &d);
    } else if (rc == 0) {
        crew_lock_acquire(&w.lock, CREW_FOREVER);
        while (!wait_satisfied(&w, n, mode)) {
            if (d.is_try || crew__cond_wait_dl(&w.cond, &d) == CREW_ETIMEDOUT) {
                if (!wait_satisfied(&w, n, mode)) rc = CREW_ETIMEDOUT;
                break;
            }
        }
        crew_lock_release(&w.lock);
    }
    for (size_t i = 0; i < added; i++) waiter_remove(&w, futures[i]);
    waiter_destroy(&w);
    if (rc != 0) return rc;
    size_t done = 0;
    for (size_t i = 0; i < n; i++) done += crew_future_done(futures[i]);
    return done > INT_MAX ? INT_MAX : (int)done;
}

/* -------------------------------------------------------------- iterator */

struct crew_future_iter {
    waiter w;
    size_t n, returned;
    crew_future **futures;     /* each referenced */
};

void crew_future_iter_free(crew_future_iter *it) {
    if (!it) return;
    for (size_t i = 0; i < it->n; i++) {
        waiter_remove(&it->w, it->futures[i]);
        crew_future_free(it->futures[i]);
    }
    waiter_destroy(&it->w);
    free(it->w.ready);
    free(it->futures);
    free(it);
}

int crew_future_iter_start(crew_future_iter **out, crew_future *const *futures, size_t n) {
    if (out == NULL || (n > 0 && futures == NULL)) return CREW_EINVAL;
    for (size_t i = 0; i < n; i++)
        if (futures[i] == NULL) return CREW_EINVAL;
    crew_future_iter *it = calloc(1, sizeof *it);
    if (!it) return CREW_ENOMEM;
    waiter_init(&it->w);
    it->futures = calloc(n ? n : 1, sizeof *it->futures);
    it->w.ready = calloc(n ? n : 1, sizeof *it->w.ready);
    if (!it->futures || !it->w.ready) {
        crew_future_iter_free(it);
        return CREW_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        it->futures[i] = crew_future_ref(futures[i]);
        it->n = i + 1;
        if (waiter_add(&it->w, futures[i], i) < 0) {
            crew_future_iter_free(it);
            return CREW_ENOMEM;
        }
    }
    *out = it;
    return 0;
}

int crew_future_iter_next(crew_future_iter *it, size_t *index, double timeout) {
    if (!it || !index) return CREW_EINVAL;
    crew__deadline d;
    int rc = crew__deadline_init(&d, timeout);
    if (rc != 0) return rc;
    if (it->returned == it->n) return CREW_EOF;
    if (crew__future_helper && !d.is_try) {
        rc = crew__future_helper(iter_ready, &it->w, &d);
        if (rc != 0) return rc;
    }
    crew_lock_acquire(&it->w.lock, CREW_FOREVER);
    while (it->w.ready_head == it->w.ready_tail) {
        if (d.is_try || crew__cond_wait_dl(&it->w.cond, &d) == CREW_ETIMEDOUT) {
            if (it->w.ready_head == it->w.ready_tail) rc = CREW_ETIMEDOUT;
            break;
        }
    }
    if (rc == 0) {
        *index = it->w.ready[it->w.ready_head++];
        it->returned++;
    }
    crew_lock_release(&it->w.lock);
    return rc;
}
