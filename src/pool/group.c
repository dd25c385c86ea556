/* crew_group: fire-and-forget tasks with one wait for all of them.
 *
 * A group's task is a 32-byte record (group_task) from the per-thread block
 * cache, queued like any other work (crew__pool_push: the adding worker's
 * own deque, or the injector from outside the pool) and freed by whoever
 * runs it. No future: the outcome goes to the group.
 *
 * The group's state is one 32-bit futex word, `state`: a count in the low
 * 31 bits, and WAITER, set by an outside thread that sleeps until the count
 * is 0. The count is an upper bound of the group's unfinished tasks:
 *
 *   count = tasks queued or running + credit held by workers
 *
 * A task is counted (+1) before it is queued. When a worker finishes one,
 * its unit of count is not given back at once but kept as credit in the
 * worker's thread-local stash (stash_group, stash_credit; one group at a
 * time); the worker's next task added to that group spends the credit
 * instead of incrementing the shared word. A recursive group whose tasks
 * stay on their worker thus touches the shared word almost never, where a
 * plain counter would bounce its cache line between cores twice a task.
 * A worker gives its credit back (crew__group_flush, one subtraction)
 * before it runs any other task than one of that group's, whenever it
 * finds no work, before it waits on a group, and when a wait or a loop's
 * join returns to the frame that waited (the tasks it ran meanwhile are
 * over): so credit is held only while the worker runs that group's tasks
 * one after another, and a group whose tasks are all done reaches 0 as
 * soon as the workers that ran them look for more work.
 *
 * The subtraction that takes the count to 0 is the last touch of the group
 * by that thread, except for passing the word's address to futex_wake
 * (harmless once freed), so a waiter may free the group the moment it sees
 * 0. A worker waiting on the group helps (crew__pool_help) and is woken by
 * crew__pool_notify, which uses only the pool.
 *
 * `error` holds the first failure (a CAS from 0 decides which); a failure
 * or crew_group_cancel sets `cancelled`, which tasks read before they start
 * and skip their function when set. The failing worker writes both before
 * it gives back its credit, so the waiter that sees the count reach 0 sees
 * them (the subtractions are read-modify-writes of one word: the last one
 * comes after every other).
 *
 * Throttling (pool.h): a task is run at once in the adding thread, without
 * being counted or queued, when enough already wait where it would go.
 */
#include <limits.h>
#include <stdlib.h>

#include "block_cache.h"
#include "crew/clock.h"
#include "crew/error.h"
#include "futex.h"
#include "pool/call.h"
#include "pool/pool_internal.h"

/* Run a task at once when this many wait on the adding worker's deque (or,
 * from outside, this many per worker are unfinished). */
#define GROUP_INLINE_DEPTH 64
/* Bursts. A worker that queues a window of GROUP_WINDOW tasks within
 * GROUP_WINDOW_NS and sees thieves take nearly all of them meanwhile, more
 * than two per thief, knows that they run a task in less time than it takes
 * to queue one (a cache-line exchange with the thief per task, ~100-200 ns):
 * running the next ones here is then no slower, and it runs up to
 * GROUP_BURST of them at once, for at most GROUP_BURST_NS, before queueing
 * again. Without this a worker and a thief settle into a steady state
 * where every task of a stream of tiny ones is queued and stolen one by
 * one, at ~20 times the cost of running it; the deque never gets deep
 * enough for the throttle above. Thieves busy with a long task each take
 * one each, and a slow stream of tasks takes long: neither starts a burst,
 * so a burst never holds back work that others could do in parallel for
 * more than about GROUP_BURST_NS. */
#define GROUP_WINDOW 64
#define GROUP_WINDOW_NS (GROUP_WINDOW * 500)
#define GROUP_BURST 4096
#define GROUP_BURST_NS (50 * 1000)

/* In a burst: whether to run the next task at once (and count it). */
static bool bursting(crew__worker *w) {
    if (w->burst_left == 0) return false;
    if ((--w->burst_left & 63) == 0 && crew__now_ns() - w->burst_t0 > GROUP_BURST_NS) w->burst_left = 0;
    return true;
}

/* A task is about to be queued on w's deque: track the window. */
static void window_push(crew_pool *pool, crew__worker *w) {
    if (w->win_pushes++ == 0) {
        w->win_taken = crew__deque_taken(&w->deque);
        w->win_t0 = crew__now_ns();
        return;
    }
    if (w->win_pushes < GROUP_WINDOW) return;
    w->win_pushes = 0;
    int64_t now = crew__now_ns(), taken = crew__deque_taken(&w->deque) - w->win_taken;
    if (pool->nworkers > 1 && now - w->win_t0 < GROUP_WINDOW_NS && taken > GROUP_WINDOW - 8 &&
        taken > 2 * (int64_t)(pool->nworkers - 1)) {
        w->burst_left = GROUP_BURST;
        w->burst_t0 = now;
    }
}

#define WAITER 0x80000000u
#define COUNT 0x7fffffffu

struct crew_group {
    crew_pool *pool;
    _Atomic int error;         /* the first failure, or 0 */
    _Atomic int cancelled;     /* skip tasks not started */
    _Alignas(64) _Atomic uint32_t state; /* count | WAITER (see above) */
};

typedef struct group_task {
    crew__task task;
    crew_group *g;
    crew_group_fn fn;
    void *arg;
} group_task;

/* What a process pool's child receives: the function and its argument. */
typedef struct group_call_rec {
    crew_group_fn fn;
    void *arg;
} group_call_rec;

static int group_tramp(const void *in, void *out, void *ctx) {
    (void)out, (void)ctx;
    const group_call_rec *r = in;
    crew__pool_index = SIZE_MAX; /* not the call's item 0: a group's task has no index */
    return r->fn(r->arg);
}

static void fail(crew_group *g, int rc) {
    int none = 0;
    atomic_compare_exchange_strong(&g->error, &none, rc);
    atomic_store(&g->cancelled, 1);
}

/* Call fn(arg) for worker w (NULL: here, in this thread). A process pool's
 * worker ships it to its child. Returns 0 or a negative code. */
static int call_fn(crew_pool *pool, crew__worker *w, crew_group_fn fn, void *arg) {
    if (w && pool->kind == CREW_PROCESSES) {
        group_call_rec rec = {fn, arg};
        crew__call call = {.op = CREW__CALL_ITEMS, .fn = group_tramp, .in = &rec, .in_size = sizeof rec, .n = 1};
        return crew__call_run(w, &call);
    }
    size_t saved = crew__pool_index;
    crew__pool_index = SIZE_MAX; /* a group's task has no item index */
    int rc = fn(arg);
    crew__pool_index = saved;
    return rc > 0 ? CREW_EINVAL : rc;
}

/* Give back n units of g's count; wake the waiters when it reaches 0. */
static void release(crew_group *g, uint32_t n) {
    crew_pool *pool = g->pool;
    uint32_t old = atomic_fetch_sub(&g->state, n);
    /* From here on g may be freed: only its address is used. */
    if ((old & COUNT) == n) {
        if (old & WAITER) crew__futex_wake(&g->state, INT_MAX, false);
        crew__pool_notify(pool);
    }
}

/* The calling worker's credit (see above). */
CREW__TLS crew_group *crew__group_stash;
static CREW__TLS uint32_t stash_credit;

void crew__group_flush(void) {
    crew_group *g = crew__group_stash;
    uint32_t n = stash_credit;
    crew__group_stash = NULL;
    stash_credit = 0;
    if (g && n) release(g, n);
}

void crew__group_task_run(crew__task *task, crew__worker *w) {
    group_task *t = (group_task *)task;
    crew_group *g = t->g;
    crew_group_fn fn = t->fn;
    void *arg = t->arg;
    crew__block_free(t, sizeof *t);
    crew_pool *pool = g->pool;
    if (w == NULL) { /* cancelled by terminate, on its thread */
        fail(g, CREW_ECANCELED);
        release(g, 1);
        crew__pool_done(pool);
        return;
    }
    if (crew__group_stash != g) {
        crew__group_flush();
        crew__group_stash = g;
    }
    if (atomic_load_explicit(&pool->terminating, memory_order_relaxed)) {
        fail(g, CREW_ECANCELED);
    } else if (!atomic_load_explicit(&g->cancelled, memory_order_relaxed)) {
        int rc = call_fn(pool, w, fn, arg);
        if (rc != 0) fail(g, rc);
        /* fn may have run other groups' tasks (a nested wait): the stash
         * may hold another group now. */
        if (crew__group_stash != g) {
            crew__group_flush();
            crew__group_stash = g;
        }
    }
    stash_credit++; /* this task's unit of count */
    crew__bump(&w->completed); /* crew__pool_done, w known */
}

int crew_group_create(crew_group **out, crew_pool *pool) {
    if (!out || !pool) return CREW_EINVAL;
    crew_group *g = aligned_alloc(64, (sizeof *g + 63) / 64 * 64);
    if (!g) return CREW_ENOMEM;
    g->pool = pool;
    atomic_init(&g->error, 0);
    atomic_init(&g->cancelled, 0);
    atomic_init(&g->state, 0);
    *out = g;
    return 0;
}

/* Run fn(arg) now in the adding thread w (NULL: outside the pool). */
static void run_here(crew_group *g, crew__worker *w, crew_group_fn fn, void *arg) {
    if (atomic_load_explicit(&g->pool->terminating, memory_order_relaxed)) {
        fail(g, CREW_ECANCELED); /* as a queued task would be */
        return;
    }
    int rc = w ? call_fn(g->pool, w, fn, arg) : crew__pool_run_guest(g->pool, fn, arg);
    if (rc != 0) fail(g, rc);
}

int crew_group_run(crew_group *g, crew_group_fn fn, void *arg) {
    if (!g || !fn) return CREW_EINVAL;
    crew_pool *pool = g->pool;
    if (atomic_load_explicit(&g->cancelled, memory_order_relaxed)) return CREW_ECANCELED;
    crew__worker *w = crew__pool_self(pool);
    if (w && (crew__deque_deeper(&w->deque, GROUP_INLINE_DEPTH) || bursting(w))) {
        run_here(g, w, fn, arg);
        return 0;
    }
    if (!w && crew__proc_child(pool)) { /* a task of a process pool: run it here */
        run_here(g, NULL, fn, arg);
        return 0;
    }
    int rc = 0;
    if (w && pool->pid == crew__pid()) crew__bump(&w->accepted); /* crew__pool_accept, w known */
    else if ((rc = crew__pool_accept(pool)) != 0) return rc;
    if (!w && pool->kind == CREW_THREADS &&
        (atomic_load_explicit(&g->state, memory_order_relaxed) & COUNT) >= GROUP_INLINE_DEPTH * pool->nworkers) {
        run_here(g, NULL, fn, arg);
        crew__pool_done(pool);
        return 0;
    }
    group_task *t = crew__block_alloc(sizeof *t);
    if (!t) {
        crew__pool_done(pool);
        return CREW_ENOMEM;
    }
    *t = (group_task){.task = {crew__group_task_run}, .g = g, .fn = fn, .arg = arg};
    if (w) window_push(pool, w);
    if (w && crew__group_stash == g && stash_credit > 0) stash_credit--; /* spend credit */
    else atomic_fetch_add(&g->state, 1);
    rc = crew__pool_push(pool, &t->task);
    if (rc != 0) {
        crew__block_free(t, sizeof *t);
        release(g, 1);
        crew__pool_done(pool);
    }
    return rc;
}

static bool group_idle(void *arg) {
    crew_group *g = arg;
    return (atomic_load(&g->state) & COUNT) == 0;
}

/* Wait for the count to reach 0 from outside the pool. */
static int wait_outside(crew_group *g, const crew__deadline *d) {
    for (;;) {
        uint32_t s = atomic_load(&g->state);
        if ((s & COUNT) == 0) return 0;
        if (d->is_try || crew__deadline_passed(d)) return CREW_ETIMEDOUT;
        if (!(s & WAITER) && !atomic_compare_exchange_weak(&g->state, &s, s | WAITER)) continue;
        crew__futex_wait(&g->state, s | WAITER, d, false);
    }
}

int crew_group_wait(crew_group *g, double timeout) {
    if (!g) return CREW_EINVAL;
    crew__deadline d;
    int rc = crew__deadline_init(&d, timeout);
    if (rc != 0) return rc;
    crew__worker *w = crew__pool_self(g->pool);
    if (w) crew__group_flush(); /* our own credit would keep the count up */
    rc = w ? crew__pool_help(w, group_idle, g, &d) : wait_outside(g, &d);
    if (rc != 0) return rc;
    /* All done: report, and make the group new again. A stale WAITER bit
     * only costs a later completer a futex_wake. */
    rc = atomic_exchange(&g->error, 0);
    if (atomic_exchange(&g->cancelled, 0) && rc == 0) rc = CREW_ECANCELED;
    return rc;
}

int crew_group_cancel(crew_group *g) {
    if (!g) return CREW_EINVAL;
    atomic_store(&g->cancelled, 1);
    return 0;
}

bool crew_group_cancelled(const crew_group *g) { return g && atomic_load(&((crew_group *)g)->cancelled); }

void crew_group_free(crew_group *g) {
    if (!g) return;
    if ((atomic_load(&g->state) & COUNT) != 0) {
        crew_group_cancel(g);
        crew_group_wait(g, CREW_FOREVER);
    }
    free(g);
}
