/* crew_pool: creation, lifetime (close, terminate, join, free) and submit.
 *
 * Threads involved: the creator, any thread that submits or waits, and the
 * workers (sched.c). Work is counted from acceptance to completion
 * (crew__pool_accept/done); join waits for the counts to agree after close,
 * then stops the workers. A submitted task lives inside its
 * future's allocation (crew__future_create_ex): the queue holds one
 * reference to the future until the task has run or been cancelled, the
 * caller another.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crew/clock.h"
#include "crew/error.h"
#include "crew/thread.h"
#include "future_internal.h"
#include "futex.h"
#include "pool/call.h"
#include "pool/pool_internal.h"

/* The most workers a pool may have. */
#define MAX_WORKERS 4096

/* A submit from a worker whose own deque holds this many tasks runs the task
 * at once instead of queueing it (see crew_pool_submit). */
#define INLINE_DEPTH 256

static bool foreign(const crew_pool *pool) { return pool->pid != crew__pid(); }

/* ------------------------------------------------------------ accounting */

void crew__pool_count(crew_pool *pool) {
    crew__worker *w = crew__pool_self(pool);
    if (w) crew__bump(&w->accepted);
    else atomic_fetch_add(&pool->ext_accepted, 1);
}

int crew__pool_accept(crew_pool *pool) {
    if (foreign(pool)) return CREW_ECHILD;
    crew__pool_count(pool);
    /* A task's work is part of work accepted already: allowed after close. */
    if (atomic_load(&pool->closed) && !crew__pool_inside(pool)) {
        crew__pool_done(pool);
        return CREW_ESHUTDOWN;
    }
    return 0;
}

void crew__pool_done(crew_pool *pool) {
    crew__worker *w = crew__pool_self(pool);
    if (w) {
        crew__bump(&w->completed); /* joiners are woken when w goes idle */
        return;
    }
    atomic_fetch_add(&pool->ext_completed, 1);
    crew__pool_wake_joiners(pool);
}

void crew__pool_wake_joiners(crew_pool *pool) {
    atomic_thread_fence(memory_order_seq_cst); /* the count before the read */
    if (atomic_load(&pool->joiners) != 0) {
        atomic_fetch_add(&pool->quiet, 1);
        crew__futex_wake(&pool->quiet, INT_MAX, false);
    }
}

bool crew__pool_quiet(crew_pool *pool) {
    size_t done = atomic_load(&pool->ext_completed), taken = 0;
    for (size_t i = 0; i < pool->nworkers; i++) done += atomic_load(&pool->workers[i].completed);
    atomic_thread_fence(memory_order_seq_cst);
    for (size_t i = 0; i < pool->nworkers; i++) taken += atomic_load(&pool->workers[i].accepted);
    taken += atomic_load(&pool->ext_accepted);
    return done == taken;
}

/* ---------------------------------------------------------------- create */

static void release(crew_pool *pool) {
    /* The mailboxes are in the arena, shared with the creator: only the
     * creator frees them (a forked child only drops its copy of the rest). */
    if (pool->kind == CREW_PROCESSES && !foreign(pool)) crew__proc_release(pool);
    if (pool->deques)
        for (size_t i = 0; i < pool->nworkers; i++) crew__deque_destroy(&pool->workers[i].deque);
    free(pool->workers);
    free(pool->inj_ring);
    crew_lock_destroy(&pool->inj_lock);
    crew_lock_destroy(&pool->state_lock);
    free(pool);
}

/* Stop and join every started worker (creation failed, or join). */
static void stop_workers(crew_pool *pool) {
    atomic_store(&pool->stop, 1);
    crew__pool_wake_all(pool);
    for (size_t i = 0; i < pool->nworkers; i++)
        if (pool->workers[i].started) pthread_join(pool->workers[i].thread, NULL);
}

int crew_pool_create(crew_pool **out, const crew_pool_options *opts) {
    if (!out) return CREW_EINVAL;
    crew_pool_options o = opts ? *opts : (crew_pool_options){0};
    if (o.kind == CREW_MPI) return CREW_ENOSYS;
    if ((o.kind != CREW_THREADS && o.kind != CREW_PROCESSES) || o.workers > MAX_WORKERS) return CREW_EINVAL;
    if (o.kind == CREW_THREADS && (o.max_tasks_per_child || o.retries)) return CREW_EINVAL;
    size_t n = o.workers ? o.workers : (size_t)crew_cpu_count();
    if (n == 0) n = 1;

    crew_pool *pool = aligned_alloc(_Alignof(crew_pool), ((sizeof *pool + 63) / 64) * 64);
    if (!pool) return CREW_ENOMEM;
    memset(pool, 0, sizeof *pool);
    pool->workers = aligned_alloc(64, ((n * sizeof(crew__worker) + 63) / 64) * 64);
    if (!pool->workers) {
        free(pool);
        return CREW_ENOMEM;
    }
    memset(pool->workers, 0, n * sizeof(crew__worker));
    pool->nworkers = n;
    pool->pid = crew__pid();
    crew_lock_init(&pool->inj_lock, 0);
    crew_lock_init(&pool->state_lock, 0);
    pool->max_pending = o.max_pending;
    pool->kind = o.kind;
    pool->max_tasks_per_child = o.max_tasks_per_child;
    pool->retries = o.retries;
    pool->initializer = o.initializer;
    pool->initarg = o.initarg;
    snprintf(pool->name, sizeof pool->name, "%s", o.name && *o.name ? o.name : "crew-pool");

    int rc = o.kind == CREW_PROCESSES ? crew__proc_setup(pool) : 0;
    if (rc == 0) rc = crew__pool_start_workers(pool);
    size_t started = 0;
    for (size_t i = 0; i < n; i++) started += pool->workers[i].started;
    /* Wait for every started worker's initializer. */
    for (;;) {
        uint32_t done = atomic_load(&pool->init_done);
        if (done >= started) break;
        crew__futex_wait(&pool->init_done, done, NULL, false);
    }
    if (rc == 0) rc = atomic_load(&pool->init_rc);
    if (rc != 0) {
        stop_workers(pool);
        release(pool);
        return rc;
    }
    *out = pool;
    return 0;
}

size_t crew_pool_workers(const crew_pool *pool) { return pool ? pool->nworkers : 0; }

/* -------------------------------------------------------------- lifetime */

int crew_pool_close(crew_pool *pool) {
    if (!pool) return CREW_EINVAL;
    if (foreign(pool)) return CREW_ECHILD;
    atomic_store(&pool->closed, 1);
    /* Submitters held by backpressure give up with CREW_ESHUTDOWN. */
    atomic_fetch_add(&pool->bp_seq, 1);
    crew__futex_wake(&pool->bp_seq, INT_MAX, false);
    return 0;
}

int crew_pool_terminate(crew_pool *pool) {
    if (!pool) return CREW_EINVAL;
    if (foreign(pool)) return CREW_ECHILD;
    atomic_store(&pool->terminating, 1);
    crew_pool_close(pool);
    /* Cancel what waits in the injector here and now; what waits in the
     * workers' deques is cancelled by the workers as they pop it. */
    /* Worker processes die at once; the calls they ran fail. */
    if (pool->kind == CREW_PROCESSES) crew__proc_kill_children(pool);
    crew__task **list;
    size_t n = crew__pool_drain_injector(pool, &list);
    for (size_t i = 0; i < n; i++) list[i]->run(list[i], NULL);
    free(list);
    crew__pool_wake_all(pool);
    return 0;
}

int crew_pool_join(crew_pool *pool, double timeout) {
    if (!pool) return CREW_EINVAL;
    if (crew__proc_child(pool)) return CREW_EDEADLK; /* a task of a process pool */
    if (foreign(pool)) return CREW_ECHILD;
    crew__deadline d;
    int rc = crew__deadline_init(&d, timeout);
    if (rc != 0) return rc;
    if (!atomic_load(&pool->closed)) return CREW_EINVAL;
    if (crew__pool_self(pool)) return CREW_EDEADLK;
    atomic_fetch_add(&pool->joiners, 1);
    for (;;) {
        uint32_t q = atomic_load(&pool->quiet);
        if (crew__pool_quiet(pool)) {
            /* Stop the workers unless an imap refill (accepted under
             * state_lock) slipped in meanwhile. */
            crew_lock_acquire(&pool->state_lock, CREW_FOREVER);
            bool quiet = crew__pool_quiet(pool);
            if (quiet && !pool->joined) {
                stop_workers(pool);
                pool->joined = true;
            }
            crew_lock_release(&pool->state_lock);
            if (quiet) break;
            continue;
        }
        if (d.is_try || crew__deadline_passed(&d)) {
            rc = CREW_ETIMEDOUT;
            break;
        }
        /* Woken by a worker going idle or an outside completion; the slice
         * is a safety net, not the mechanism. */
        crew__deadline slice = {.ns = crew__now_ns() + 50 * 1000 * 1000, .is_try = false};
        if (slice.ns > d.ns) slice = d;
        crew__futex_wait(&pool->quiet, q, &slice, false);
    }
    atomic_fetch_sub(&pool->joiners, 1);
    return rc;
}

void crew_pool_free(crew_pool *pool) {
    if (!pool) return;
    /* From one of the pool's own tasks the workers cannot be joined (one of
     * them is the caller): a documented misuse, refused by doing nothing. */
    if (crew__pool_self(pool)) return;
    if (!foreign(pool)) {
        crew_pool_close(pool);
        crew_pool_join(pool, CREW_FOREVER);
    }
    release(pool);
}

/* ---------------------------------------------------------------- submit */

typedef struct submit_task {
    crew__task task;
    crew_pool *pool;
    crew_future *future;
    crew_task_fn fn;
    const void *in;
    void *ctx;
    void (*callback)(const void *result, void *arg);
    void (*error_callback)(int code, void *arg);
    void *callback_arg;
    size_t index;
    size_t in_size, out_size;
    bool held;                 /* counted in pool->pending */
    _Alignas(max_align_t) unsigned char inbuf[];
} submit_task;

static void pending_release(crew_pool *pool) {
    atomic_fetch_sub(&pool->pending, 1);
    if (atomic_load(&pool->bp_waiters) != 0) {
        atomic_fetch_add(&pool->bp_seq, 1);
        crew__futex_wake(&pool->bp_seq, 1, false);
    }
}

/* Take a backpressure slot: wait while max_pending submissions wait. */
static int pending_acquire(crew_pool *pool) {
    size_t n = atomic_load(&pool->pending);
    for (;;) {
        if (n < pool->max_pending) {
            if (atomic_compare_exchange_weak(&pool->pending, &n, n + 1)) return 0;
            continue;
        }
        if (atomic_load(&pool->closed)) return CREW_ESHUTDOWN;
        uint32_t s = atomic_load(&pool->bp_seq);
        atomic_fetch_add(&pool->bp_waiters, 1);
        n = atomic_load(&pool->pending);
        if (n >= pool->max_pending) crew__futex_wait(&pool->bp_seq, s, NULL, false);
        atomic_fetch_sub(&pool->bp_waiters, 1);
        n = atomic_load(&pool->pending);
    }
}

static void submit_run(crew__task *task, crew__worker *w) {
    submit_task *t = (submit_task *)task;
    crew_pool *pool = t->pool;
    crew_future *f = t->future;
    if (t->held) pending_release(pool);
    if (w == NULL || atomic_load(&pool->terminating)) {
        crew_future_cancel(f); /* EBUSY if the caller cancelled it already: fine */
    } else if (crew_future_set_running(f) == 0) {
        void *out = crew__future_result(f);
        crew__call call = {.op = CREW__CALL_ITEMS, .fn = t->fn, .ctx = t->ctx, .in = t->in,
                           .in_size = t->in_size, .out = out, .out_size = t->out_size,
                           .first = t->index, .n = 1};
        int rc = crew__call_run(w, &call);
        if (rc == 0 && t->callback) t->callback(out, t->callback_arg);
        if (rc < 0 && t->error_callback) t->error_callback(rc, t->callback_arg);
        crew__future_finish(f, rc);
    }
    crew__pool_notify(pool);
    crew_future_free(f); /* the queue's reference; may free t */
    crew__pool_done(pool);
}

/* A submit inside a process pool's child: run the task now. */
static int submit_inline(const crew_task *task, crew_future **out) {
    crew_future *f;
    int rc = crew_future_create(&f, task->out_size);
    if (rc != 0) return rc;
    crew_future_set_running(f);
    crew__call call = {.op = CREW__CALL_ITEMS, .fn = task->fn, .ctx = task->ctx, .in = task->in,
                       .in_size = task->in_size, .out = crew__future_result(f), .out_size = task->out_size,
                       .n = 1};
    rc = crew__call_exec(&call);
    if (rc == 0 && task->callback) task->callback(crew__future_result(f), task->callback_arg);
    if (rc < 0 && task->error_callback) task->error_callback(rc, task->callback_arg);
    crew__future_finish(f, rc);
    *out = f;
    return 0;
}

int crew_pool_submit(crew_pool *pool, const crew_task *task, crew_future **out) {
    if (!pool || !task || !out || !task->fn || (task->in_size && !task->in)) return CREW_EINVAL;
    if (crew__proc_child(pool)) return submit_inline(task, out);
    int rc = crew__pool_accept(pool);
    if (rc != 0) return rc;
    bool hold = pool->max_pending && !crew__pool_self(pool);
    if (hold && (rc = pending_acquire(pool)) != 0) {
        crew__pool_done(pool);
        return rc;
    }
    crew_future *f;
    submit_task *t;
    /* Two references: the caller's and the queue's. */
    rc = crew__future_create_ex(&f, task->out_size, sizeof *t + task->in_size, (void **)&t, 2);
    if (rc != 0) {
        if (hold) pending_release(pool);
        crew__pool_done(pool);
        return rc;
    }
    *t = (submit_task){
        .task = {submit_run},
        .pool = pool,
        .future = f,
        .fn = task->fn,
        .in = task->in,
        .ctx = task->ctx,
        .callback = task->callback,
        .error_callback = task->error_callback,
        .callback_arg = task->callback_arg,
        .index = atomic_fetch_add_explicit(&pool->submitted, 1, memory_order_relaxed),
        .in_size = task->in_size,
        .out_size = task->out_size,
        .held = hold,
    };
    if (task->in_size) {
        memcpy(t->inbuf, task->in, task->in_size);
        t->in = t->inbuf;
    }
    crew__worker *w = crew__pool_self(pool);
    if (w && crew__deque_depth(&w->deque) >= INLINE_DEPTH) {
        /* Throttle, as OpenMP runtimes do: with this many tasks already
         * queued on this worker, another one adds nothing to the parallelism
         * but memory and a steal; run it now, before submit returns. */
        submit_run(&t->task, w);
        *out = f;
        return 0;
    }
    rc = crew__pool_push(pool, &t->task);
    if (rc != 0) {
        if (hold) pending_release(pool);
        crew_future_free(f);
        crew_future_free(f);
        crew__pool_done(pool);
        return rc;
    }
    *out = f;
    return 0;
}
