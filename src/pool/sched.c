/* The thread pool's scheduler: workers, work stealing, sleeping and waking.
 *
 * Each worker owns a deque (deque.h). Work made by a worker (a nested
 * submit, the halves of a split loop) goes on its own deque; work from any
 * other thread goes on the pool's injector. A worker looks for work in this
 * order: its own deque (newest first), the other workers' deques (oldest
 * first, starting at a random victim), the injector.
 *
 * A worker that finds nothing spins a little ("spinning"), then sleeps on
 * the pool's `epoch` futex word after announcing itself in `sleepers` and
 * looking once more. A thread that queues work reads `spinning` and
 * `sleepers` after publishing it and wakes one sleeper only when no worker
 * is spinning: a spinning worker will find the task, and a worker that stops
 * spinning to sleep looks again after announcing itself. Both sides use
 * seq_cst, so a sleeper misses no work.
 *
 * Waiting inside a task (a nested loop's join, crew_future_get, imap) never
 * blocks a worker: crew__pool_help runs other tasks until the awaited thing
 * completes, and when there is nothing to run it sleeps as a "helper"; every
 * completion that a helper may wait for calls crew__pool_notify, which wakes
 * all sleepers while a helper sleeps. A helper waiting for something the
 * pool does not complete (a future completed by another thread) also wakes
 * every 10 ms to look.
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crew/clock.h"
#include "crew/error.h"
#include "future_internal.h"
#include "futex.h"
#include "pool/pool_internal.h"

CREW__TLS size_t crew__pool_index = SIZE_MAX;
/* The calling thread's worker record, if it is a pool's worker. */
CREW__TLS crew__worker *crew__pool_me;
/* The pool whose task a thread outside it runs at once (crew_group_run). */
static CREW__TLS crew_pool *guest;

/* How many rounds a worker looks for work before it sleeps. */
enum { SPIN_ROUNDS = 64 };

crew_pool *crew_pool_current(void) {
    if (crew__pool_me) return crew__pool_me->pool;
    return guest ? guest : crew__proc_child_pool();
}

bool crew__pool_inside(const crew_pool *pool) { return crew__pool_self(pool) != NULL || guest == pool; }

int crew__pool_run_guest(crew_pool *pool, crew_group_fn fn, void *arg) {
    crew_pool *saved_guest = guest;
    size_t saved_index = crew__pool_index;
    guest = pool;
    crew__pool_index = SIZE_MAX;
    int rc = fn(arg);
    guest = saved_guest;
    crew__pool_index = saved_index;
    return rc > 0 ? CREW_EINVAL : rc;
}

size_t crew_pool_task_index(void) { return crew__pool_index; }

/* ----------------------------------------------------------------- waking */

static void wake(crew_pool *pool, int n) {
    atomic_fetch_add(&pool->epoch, 1);
    crew__futex_wake(&pool->epoch, n, false);
}

void crew__pool_wake_all(crew_pool *pool) { wake(pool, INT_MAX); }

/* After publishing work: wake a sleeper unless a worker is still looking. */
static void work_published(crew_pool *pool) {
    /* Orders the publishing store before the loads below (store-load),
     * pairing with the sleeper's announce-then-look in sleep_once. */
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load(&pool->spinning) == 0 && atomic_load(&pool->sleepers) != 0) wake(pool, 1);
}

void crew__pool_wake_more(crew_pool *pool, size_t n) {
    if (n == 0 || atomic_load(&pool->sleepers) == 0) return;
    wake(pool, n > INT_MAX ? INT_MAX : (int)n);
}

void crew__pool_notify(crew_pool *pool) {
    atomic_thread_fence(memory_order_seq_cst); /* as in work_published */
    if (atomic_load(&pool->helpers) != 0) wake(pool, INT_MAX);
}

/* -------------------------------------------------------------- injector */

static int injector_push(crew_pool *pool, crew__task *t) {
    crew_lock_acquire(&pool->inj_lock, CREW_FOREVER);
    if (pool->inj_len == pool->inj_cap) {
        size_t cap = pool->inj_cap ? pool->inj_cap * 2 : 64;
        crew__task **ring = malloc(cap * sizeof *ring);
        if (!ring) {
            crew_lock_release(&pool->inj_lock);
            return CREW_ENOMEM;
        }
        for (size_t i = 0; i < pool->inj_len; i++)
            ring[i] = pool->inj_ring[(pool->inj_head + i) % pool->inj_cap];
        free(pool->inj_ring);
        pool->inj_ring = ring;
        pool->inj_cap = cap;
        pool->inj_head = 0;
    }
    pool->inj_ring[(pool->inj_head + pool->inj_len) % pool->inj_cap] = t;
    pool->inj_len++;
    atomic_store(&pool->inj_count, pool->inj_len);
    crew_lock_release(&pool->inj_lock);
    return 0;
}

/* The most tasks a worker moves from the injector at once. */
enum { INJECTOR_BATCH = 32 };

/* Take work from the injector: one task to run now and, when more wait,
 * a fair share more (up to INJECTOR_BATCH) onto w's own deque, where the
 * other workers can still steal them. One lock round trip then serves many
 * tasks of a burst of outside submissions. */
static crew__task *injector_pop(crew__worker *w) {
    crew_pool *pool = w->pool;
    if (atomic_load_explicit(&pool->inj_count, memory_order_relaxed) == 0) return NULL;
    crew__task *batch[INJECTOR_BATCH];
    size_t n = 0;
    crew_lock_acquire(&pool->inj_lock, CREW_FOREVER);
    size_t take = pool->inj_len / pool->nworkers + 1;
    if (take > pool->inj_len) take = pool->inj_len;
    if (take > INJECTOR_BATCH) take = INJECTOR_BATCH;
    for (; n < take; n++) {
        batch[n] = pool->inj_ring[pool->inj_head];
        pool->inj_head = (pool->inj_head + 1) % pool->inj_cap;
    }
    pool->inj_len -= n;
    atomic_store(&pool->inj_count, pool->inj_len);
    crew_lock_release(&pool->inj_lock);
    if (n == 0) return NULL;
    /* batch[0] runs now; the rest go on the deque newest first, so that
     * its owner pops them oldest first. */
    for (size_t i = n; i-- > 1;)
        if (!crew__deque_push(&w->deque, batch[i])) crew__pool_run(w, batch[i]); /* cannot grow */
    if (n > 1) work_published(pool);
    return batch[0];
}

size_t crew__pool_drain_injector(crew_pool *pool, crew__task ***out) {
    *out = NULL;
    crew_lock_acquire(&pool->inj_lock, CREW_FOREVER);
    size_t n = pool->inj_len;
    crew__task **list = n ? malloc(n * sizeof *list) : NULL;
    if (list) {
        for (size_t i = 0; i < n; i++) list[i] = pool->inj_ring[(pool->inj_head + i) % pool->inj_cap];
        pool->inj_head = 0;
        pool->inj_len = 0;
        atomic_store(&pool->inj_count, 0);
    } else {
        n = 0; /* out of memory: the workers cancel them one by one instead */
    }
    crew_lock_release(&pool->inj_lock);
    *out = list;
    return n;
}

int crew__pool_push(crew_pool *pool, crew__task *t) {
    crew__worker *w = crew__pool_self(pool);
    if (w) {
        if (!crew__deque_push(&w->deque, t)) return CREW_ENOMEM;
    } else {
        int rc = injector_push(pool, t);
        if (rc != 0) return rc;
    }
    work_published(pool);
    return 0;
}

/* ------------------------------------------------------------ finding work */

static crew__task *steal_any(crew__worker *w) {
    crew_pool *pool = w->pool;
    size_t n = pool->nworkers;
    if (n < 2) return NULL;
    /* xorshift64 for the first victim */
    w->seed ^= w->seed << 13;
    w->seed ^= w->seed >> 7;
    w->seed ^= w->seed << 17;
    size_t start = (size_t)(w->seed % n);
    for (int round = 0; round < 2; round++) {
        bool contended = false;
        for (size_t i = 0; i < n; i++) {
            crew__worker *v = &pool->workers[(start + i) % n];
            if (v == w) continue;
            crew__task *t = crew__deque_steal(&v->deque);
            if (t == CREW__DEQUE_ABORT) {
                contended = true;
            } else if (t) {
                return t;
            }
        }
        if (!contended) break;
    }
    return NULL;
}

static crew__task *find_work(crew__worker *w) {
    crew__task *t = crew__deque_pop(&w->deque);
    if (!t) t = steal_any(w);
    if (!t) t = injector_pop(w);
    return t;
}

static bool work_visible(crew_pool *pool) {
    if (atomic_load(&pool->inj_count) != 0) return true;
    for (size_t i = 0; i < pool->nworkers; i++)
        if (crew__deque_busy(&pool->workers[i].deque)) return true;
    return false;
}

void crew__pool_run(crew__worker *w, crew__task *t) {
    /* Credit on a group is not held while the worker does other work. */
    if (crew__group_stash && t->run != crew__group_task_run) crew__group_flush();
    size_t saved = crew__pool_index;
    t->run(t, w);
    crew__pool_index = saved;
}

/* Look for work for a while; the task found, or NULL. Counted in
 * `spinning` meanwhile. ready/arg: a helper's predicate, checked too. */
static crew__task *spin_for_work(crew__worker *w, bool (*ready)(void *), void *arg) {
    crew_pool *pool = w->pool;
    /* `spinning` only spares sleepers a wake-up: with none asleep there is
     * nothing to spare, so a busy pool's spinners leave the shared line
     * alone. (Counting too little costs an extra wake, never a lost one.) */
    bool counted = atomic_load_explicit(&pool->sleepers, memory_order_relaxed) != 0;
    if (counted) atomic_fetch_add(&pool->spinning, 1);
    crew__task *t = NULL;
    for (int i = 0; i < SPIN_ROUNDS && !t; i++) {
        /* Still no work after a round: give back group credit. Not at once:
         * a worker that steals a stream of small tasks finds none for a
         * moment after each, and giving back every time would bounce the
         * group's counter between the cores. */
        if (i == 1) crew__group_flush();
        if (ready && ready(arg)) break;
        if (atomic_load_explicit(&pool->stop, memory_order_relaxed) && !ready) break;
        t = find_work(w);
        if (!t) {
            for (int k = 0; k < 16; k++) crew__cpu_relax();
            if (i >= SPIN_ROUNDS / 2) sched_yield();
        }
    }
    /* The last spinner to stop with work found wakes another worker: more
     * work may be queued behind the task it took. */
    if (counted && atomic_fetch_sub(&pool->spinning, 1) == 1 && t && work_visible(pool) &&
        atomic_load(&pool->sleepers) != 0)
        wake(pool, 1);
    return t;
}

/* Sleep until woken, unless work appeared, the predicate holds or the pool
 * stops. `d` bounds the sleep (NULL: no bound). */
static void sleep_once(crew__worker *w, bool (*ready)(void *), void *arg, const crew__deadline *d) {
    crew_pool *pool = w->pool;
    uint32_t e = atomic_load(&pool->epoch);
    atomic_fetch_add(&pool->sleepers, 1);
    if (ready) atomic_fetch_add(&pool->helpers, 1);
    bool go = work_visible(pool) || (ready ? ready(arg) : atomic_load(&pool->stop) != 0);
    if (!go) crew__futex_wait(&pool->epoch, e, d, false);
    if (ready) atomic_fetch_sub(&pool->helpers, 1);
    atomic_fetch_sub(&pool->sleepers, 1);
}

/* The waiting loop itself; crew__pool_help wraps it. */
static int help(crew__worker *w, bool (*ready)(void *), void *arg, const crew__deadline *d) {
    bool woken = false;
    for (;;) {
        if (ready(arg)) return 0;
        crew__task *t = woken ? NULL : find_work(w); /* as in worker_main */
        if (!t) t = spin_for_work(w, ready, arg);
        woken = false;
        if (t) {
            crew__pool_run(w, t);
            continue;
        }
        if (ready(arg)) return 0;
        if (d->is_try || crew__deadline_passed(d)) return CREW_ETIMEDOUT;
        /* Sleep in slices: what we wait for may be completed by a thread
         * that does not notify this pool. */
        crew__deadline slice = {.ns = crew__now_ns() + 10 * 1000 * 1000, .is_try = false};
        if (slice.ns > d->ns) slice = *d;
        sleep_once(w, ready, arg, &slice);
        woken = true;
    }
}

int crew__pool_help(crew__worker *w, bool (*ready)(void *), void *arg, const crew__deadline *d) {
    int rc = help(w, ready, arg, d);
    /* Back to the waiting frame, which is not one of the tasks that ran
     * meanwhile: no group credit is held past them. */
    crew__group_flush();
    return rc;
}

/* The future module's hook for this thread: help while waiting. */
static int future_help(bool (*ready)(void *), void *arg, const crew__deadline *d) {
    return crew__pool_help(crew__pool_me, ready, arg, d);
}

/* ----------------------------------------------------------------- latch */

void crew__latch_set(crew_pool *pool, crew__latch *l) {
    /* After the exchange the waiter may return and the latch vanish (it
     * lives on the waiter's stack); only its address is used after, and a
     * futex wake on a stale address is harmless. */
    if (atomic_exchange(&l->state, 1) == 2) crew__futex_wake(&l->state, INT_MAX, false);
    crew__pool_notify(pool);
}

static bool latch_ready(void *arg) { return crew__latch_is_set(arg); }

void crew__latch_wait(crew_pool *pool, crew__latch *l) {
    crew__worker *w = crew__pool_self(pool);
    if (w) {
        crew__deadline forever = {.ns = INT64_MAX, .is_try = false};
        crew__pool_help(w, latch_ready, l, &forever);
        return;
    }
    for (;;) {
        uint32_t s = atomic_load(&l->state);
        if (s == 1) return;
        if (s == 0 && !atomic_compare_exchange_strong(&l->state, &s, 2)) continue;
        crew__futex_wait(&l->state, 2, NULL, false);
    }
}

/* ---------------------------------------------------------------- workers */

static void *worker_main(void *arg) {
    crew__worker *w = arg;
    crew_pool *pool = w->pool;
    crew__pool_me = w;
    crew__future_helper = future_help;
    char name[16];
    snprintf(name, sizeof name, "%.10s-%zu", pool->name, w->id);
    pthread_setname_np(pthread_self(), name);

    /* The initializer runs where the tasks will: here, or in the child. */
    int rc = pool->kind == CREW_PROCESSES ? crew__proc_start_child(w)
             : pool->initializer          ? pool->initializer(pool->initarg)
                                          : 0;
    if (rc != 0) {
        int expected = 0;
        atomic_compare_exchange_strong(&pool->init_rc, &expected, rc > 0 ? CREW_EINVAL : rc);
    }
    atomic_fetch_add(&pool->init_done, 1);
    crew__futex_wake(&pool->init_done, INT_MAX, false);

    bool woken = false;
    for (;;) {
        /* A worker just woken looks for work as a spinner, so that if it is
         * the last one looking it wakes another when more work waits (a
         * burst of submissions wakes workers one after another). */
        crew__task *t = woken ? NULL : find_work(w);
        if (!t) t = spin_for_work(w, NULL, NULL);
        woken = false;
        if (t) {
            crew__pool_run(w, t);
            continue;
        }
        if (atomic_load(&pool->stop) && !work_visible(pool)) break;
        crew__pool_wake_joiners(pool); /* idle: the pool may be quiet */
        sleep_once(w, NULL, NULL, NULL);
        woken = true;
    }
    crew__group_flush();
    if (pool->kind == CREW_PROCESSES) crew__proc_stop_child(w);
    crew__future_helper = NULL;
    crew__pool_me = NULL;
    return NULL;
}

void crew__pool_child_enter(crew_pool *pool) {
    (void)pool;
    crew__pool_me = NULL;
    crew__future_helper = NULL;
}

int crew__pool_start_workers(crew_pool *pool) {
    /* Every deque exists before any worker runs: workers steal from all. */
    for (size_t i = 0; i < pool->nworkers; i++) {
        crew__worker *w = &pool->workers[i];
        w->pool = pool;
        w->id = i;
        w->seed = 0x9e3779b97f4a7c15ull * (i + 1);
        crew_lock_init(&w->child_lock, 0);
        if (crew__deque_init(&w->deque) != 0) {
            while (i-- > 0) crew__deque_destroy(&pool->workers[i].deque);
            return CREW_ENOMEM;
        }
    }
    pool->deques = true;
    int rc = 0;
    for (size_t i = 0; i < pool->nworkers; i++) {
        crew__worker *w = &pool->workers[i];
        int e = pthread_create(&w->thread, NULL, worker_main, w);
        if (e != 0) {
            rc = e == ENOMEM ? CREW_ENOMEM : CREW_EAGAIN;
            break;
        }
        w->started = true;
    }
    return rc;
}
