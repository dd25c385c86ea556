/* crew_pool_for, crew_pool_reduce, crew_pool_map and crew_pool_map_async:
 * one engine that splits an index range by recursive halving (fork-join).
 *
 * A range is split in two while the splitter allows it; the right half goes
 * on the worker's own deque as a `range_job` that lives on this stack frame,
 * the left half runs at once, and then the worker joins the right half: if
 * no thief took it, it is still on top of the deque and runs inline; if it
 * was stolen, the worker helps with other work until the thief sets the
 * job's latch. The frame therefore outlives every job it pushed.
 *
 * The splitter is rayon's adaptive one: a range starts with `splits` =
 * number of workers, halves it at each split and stops splitting at 0, but
 * a job that was stolen (it runs on another worker than the one that queued
 * it) resets it to at least the number of workers: stealing shows that
 * workers are hungry, so the stolen piece is cut finer. `grain` bounds the
 * smallest piece.
 *
 * reduce splits along a fixed tree instead: the range is cut into leaves of
 * `grain` iterations, and every inner node combines its left and right
 * subtree in that order, whether the right one was stolen or run inline. The
 * splitter only decides which subtrees become stealable jobs, so the result
 * does not depend on the schedule.
 *
 * Errors: the first failure (for map: the lowest failed index) is kept in the
 * call under `err_lock`; `stop` makes the leaves not yet started skip their
 * work. A terminated pool makes leaves skip with CREW_ECANCELED.
 */
#include <stdlib.h>
#include <string.h>

#include "crew/clock.h"
#include "crew/error.h"
#include "future_internal.h"
#include "pool/call.h"
#include "pool/pool_internal.h"

enum { LOOP_FOR, LOOP_MAP, LOOP_REDUCE };

/* Accumulators up to this size live on the stack. */
#define SMALL_ACC 64

typedef struct loop_call {
    crew_pool *pool;
    int kind;
    size_t nunits;             /* for: iterations; map: chunks; reduce: leaves */
    size_t grain;              /* for and map: the smallest piece, in units */
    crew_for f;
    crew_map m;
    size_t chunk;              /* map: items per unit */
    crew_reduce r;
    size_t leaf;               /* reduce: iterations per leaf */

    /* CREW_PROCESSES: what a unit has cost so far (picoseconds; 0: not
     * known yet), measured around each call into a child (see
     * worth_splitting). Any worker writes it, relaxed: an estimate. */
    _Atomic uint64_t unit_ps;
    _Atomic int stop;          /* a failure or terminate: skip what is left */
    crew_lock err_lock;        /* guards rc and failed_index */
    int rc;
    size_t failed_index;       /* map: SIZE_MAX when no item failed */
    crew__progress progress;

    crew__latch done;          /* the root has run (a call from outside) */
    crew_future *future;       /* map_async */
} loop_call;

typedef struct range_job {
    crew__task task;
    loop_call *call;
    size_t b, e;               /* units; reduce: leaves */
    size_t splits;
    size_t origin;             /* the worker that queued it; SIZE_MAX: outside */
    void *acc;                 /* reduce: where this subtree's result goes */
    crew__latch latch;         /* set when a thief has run it */
    bool root;
} range_job;

static void record(loop_call *c, int rc, size_t index) {
    crew_lock_acquire(&c->err_lock, CREW_FOREVER);
    if (c->rc == 0 || (rc != CREW_ECANCELED && index < c->failed_index)) {
        if (!(rc == CREW_ECANCELED && c->rc != 0)) {
            c->rc = rc;
            if (rc != CREW_ECANCELED) c->failed_index = index;
        }
    }
    crew_lock_release(&c->err_lock);
    atomic_store(&c->stop, 1);
}

/* Whether a leaf should skip its work. */
static bool skipping(loop_call *c) {
    if (atomic_load_explicit(&c->stop, memory_order_relaxed)) return true;
    if (atomic_load_explicit(&c->pool->terminating, memory_order_relaxed)) {
        record(c, CREW_ECANCELED, SIZE_MAX);
        return true;
    }
    return false;
}

/* A call into a worker process costs a round trip (tens of microseconds
 * on a busy machine), so a process pool does not split a piece into halves
 * that run shorter than this, once calls have shown what a unit costs: a
 * map of tiny items would otherwise end in a tail of calls of a few items
 * each, every one a round trip. (A thread pool's split costs ~100 ns: it
 * splits down to the grain.) */
#define MIN_HALF_PS (100ull * 1000 * 1000)

static bool worth_splitting(loop_call *c, size_t units) {
    if (c->pool->kind != CREW_PROCESSES) return true;
    uint64_t ps = atomic_load_explicit(&c->unit_ps, memory_order_relaxed);
    return ps == 0 || units / 2 >= (MIN_HALF_PS + ps - 1) / ps; /* (units / 2) * ps >= MIN_HALF_PS */
}

/* Time a call of `units` units into a child (process pools). */
static void note_cost(loop_call *c, size_t units, int64_t t0) {
    if (units == 0) return;
    uint64_t ps = (uint64_t)(crew__now_ns() - t0) * 1000 / units;
    atomic_store_explicit(&c->unit_ps, ps ? ps : 1, memory_order_relaxed);
}

static bool try_split(size_t *splits, bool migrated, size_t nworkers) {
    if (migrated) {
        *splits = *splits / 2 > nworkers ? *splits / 2 : nworkers;
        return true;
    }
    if (*splits == 0) return false;
    *splits /= 2;
    return true;
}

/* ------------------------------------------------------------------ leaves */

static void leaf_for(crew__worker *w, loop_call *c, size_t b, size_t e) {
    if (skipping(c)) return;
    size_t base = c->f.begin;
    crew__call call = {.op = CREW__CALL_FOR, .for_body = c->f.body, .ctx = c->f.ctx, .b = base + b, .e = base + e};
    bool timed = c->pool->kind == CREW_PROCESSES;
    int64_t t0 = timed ? crew__now_ns() : 0;
    int rc = crew__call_run(w, &call);
    if (timed && rc == 0) note_cost(c, e - b, t0);
    if (rc != 0) record(c, rc, base + b);
    crew__progress_add(&c->progress, e - b);
}

static void leaf_map(crew__worker *w, loop_call *c, size_t ub, size_t ue) {
    const crew_map *m = &c->m;
    size_t i = ub * c->chunk, end = ue * c->chunk;
    if (end > m->count) end = m->count;
    if (skipping(c)) return;
    crew__call call = {
        .op = CREW__CALL_ITEMS,
        .fn = m->fn,
        .ctx = m->ctx,
        .in = m->in_size ? (const char *)m->in + i * m->in_size : m->in,
        .in_size = m->in_size,
        .out = m->out_size ? (char *)m->out + i * m->out_size : m->out,
        .out_size = m->out_size,
        .first = i,
        .n = end - i,
        .stop = &c->stop,
        .stop2 = &c->pool->terminating,
    };
    bool timed = c->pool->kind == CREW_PROCESSES;
    int64_t t0 = timed ? crew__now_ns() : 0;
    int rc = crew__call_run(w, &call);
    if (timed && rc == 0 && call.ran == call.n) note_cost(c, ue - ub, t0);
    if (rc != 0) record(c, rc, i + call.ran);
    else if (call.ran < call.n) skipping(c); /* stopped by a flag: terminate records itself */
    crew__progress_add(&c->progress, call.ran);
}

static void leaf_reduce(crew__worker *w, loop_call *c, size_t leaf, void *acc) {
    const crew_reduce *r = &c->r;
    memcpy(acc, r->identity, r->size);
    if (skipping(c)) return;
    size_t b = r->begin + leaf * c->leaf;
    size_t e = r->end - b > c->leaf ? b + c->leaf : r->end;
    crew__call call = {.op = CREW__CALL_REDUCE, .red_body = r->body, .ctx = r->ctx, .b = b, .e = e,
                       .acc = acc, .acc_size = r->size};
    int rc = crew__call_run(w, &call);
    if (rc != 0) record(c, rc, b);
    crew__progress_add(&c->progress, e - b);
}

/* ---------------------------------------------------------------- splitting */

static void job_run(crew__task *task, crew__worker *w);

/* Join `right`, queued by w: run it inline if it is still on w's deque,
 * else help until its thief is done. */
static void join(crew__worker *w, range_job *right, void (*inline_run)(crew__worker *, range_job *)) {
    for (;;) {
        if (crew__latch_is_set(&right->latch)) break;
        crew__task *t = crew__deque_pop(&w->deque);
        if (t == &right->task) {
            inline_run(w, right);
            break;
        }
        if (!t) {
            crew__latch_wait(w->pool, &right->latch);
            break;
        }
        crew__pool_run(w, t); /* a task queued below ours: ours was stolen */
    }
    /* Back in this loop's frame: no group credit from tasks run above. */
    crew__group_flush();
}

static void split_range(crew__worker *w, loop_call *c, size_t b, size_t e, size_t splits, bool migrated);

static void inline_range(crew__worker *w, range_job *j) { split_range(w, j->call, j->b, j->e, j->splits, false); }

static void split_range(crew__worker *w, loop_call *c, size_t b, size_t e, size_t splits, bool migrated) {
    size_t n = c->pool->nworkers;
    if ((e - b) / 2 >= c->grain && worth_splitting(c, e - b) && try_split(&splits, migrated, n)) {
        size_t mid = b + (e - b) / 2;
        range_job right = {.task = {job_run}, .call = c, .b = mid, .e = e, .splits = splits, .origin = w->id};
        if (crew__pool_push(c->pool, &right.task) == 0) {
            split_range(w, c, b, mid, splits, false);
            join(w, &right, inline_range);
            return;
        }
        /* The deque could not grow: run both halves here. */
    }
    if (c->kind == LOOP_FOR) leaf_for(w, c, b, e);
    else leaf_map(w, c, b, e);
}

/* An accumulator: on the stack when small, else on the heap. */
typedef struct acc_buf {
    _Alignas(max_align_t) unsigned char small[SMALL_ACC];
    void *p;
} acc_buf;

static void *acc_get(loop_call *c, acc_buf *a) {
    a->p = c->r.size <= SMALL_ACC ? a->small : malloc(c->r.size);
    if (!a->p) record(c, CREW_ENOMEM, SIZE_MAX);
    return a->p;
}

static void acc_put(acc_buf *a) {
    if (a->p != a->small) free(a->p);
}

static void reduce_tree(crew__worker *w, loop_call *c, size_t lb, size_t le, void *acc, size_t splits,
                        bool migrated);

static void inline_tree(crew__worker *w, range_job *j) {
    reduce_tree(w, j->call, j->b, j->e, j->acc, j->splits, false);
}

/* Reduce leaves [lb, le) into acc: left subtree into acc, right subtree into
 * a second accumulator, then acc = combine(acc, right). */
static void reduce_tree(crew__worker *w, loop_call *c, size_t lb, size_t le, void *acc, size_t splits,
                        bool migrated) {
    if (le - lb == 1) {
        leaf_reduce(w, c, lb, acc);
        return;
    }
    size_t mid = lb + (le - lb) / 2;
    acc_buf rb;
    void *racc = acc_get(c, &rb);
    if (!racc) {
        memcpy(acc, c->r.identity, c->r.size);
        return;
    }
    if (try_split(&splits, migrated, c->pool->nworkers)) {
        range_job right = {
            .task = {job_run}, .call = c, .b = mid, .e = le, .splits = splits, .origin = w->id, .acc = racc};
        if (crew__pool_push(c->pool, &right.task) == 0) {
            reduce_tree(w, c, lb, mid, acc, splits, false);
            join(w, &right, inline_tree);
        } else {
            reduce_tree(w, c, lb, mid, acc, 0, false);
            reduce_tree(w, c, mid, le, racc, 0, false);
        }
    } else {
        reduce_tree(w, c, lb, mid, acc, 0, false);
        reduce_tree(w, c, mid, le, racc, 0, false);
    }
    c->r.combine(acc, racc, c->r.ctx);
    acc_put(&rb);
}

/* The whole range, on worker w. */
static void run_root(crew__worker *w, loop_call *c, void *acc, bool migrated) {
    /* w NULL: inside a process pool's child, all of it here, in order. */
    size_t splits = w ? c->pool->nworkers : 0;
    if (c->nunits == 0) {
        if (c->kind == LOOP_REDUCE) memcpy(acc, c->r.identity, c->r.size);
        return;
    }
    /* The range is about to be cut for every worker: wake the idle ones
     * now, all at once (the one running this is awake already). */
    if (w) {
        size_t pieces = c->nunits / c->grain;
        crew__pool_wake_more(c->pool, (pieces < splits ? pieces : splits) - (pieces != 0));
    }
    if (c->kind == LOOP_REDUCE) reduce_tree(w, c, 0, c->nunits, acc, splits, migrated);
    else split_range(w, c, 0, c->nunits, splits, migrated);
}

static void call_finish(loop_call *c);

static void job_run(crew__task *task, crew__worker *w) {
    range_job *j = (range_job *)task;
    loop_call *c = j->call;
    crew_pool *pool = c->pool;
    if (j->root) {
        /* Queued from outside the pool; w is NULL when terminate cancels it. */
        if (w) run_root(w, c, j->acc, true);
        else record(c, CREW_ECANCELED, SIZE_MAX);
        call_finish(c);
        return;
    }
    bool migrated = j->origin != w->id;
    if (c->kind == LOOP_REDUCE) reduce_tree(w, c, j->b, j->e, j->acc, j->splits, migrated);
    else split_range(w, c, j->b, j->e, j->splits, migrated);
    crew__latch_set(pool, &j->latch);
}

/* ------------------------------------------------------------------- calls */

typedef struct async_call {
    loop_call c;
    range_job root;
} async_call;

static void call_finish(loop_call *c) {
    crew_pool *pool = c->pool;
    if (!c->future) {
        crew__latch_set(pool, &c->done);
        return;
    }
    /* map_async: report, complete the future, free the call. */
    if (c->rc != 0 && c->rc != CREW_ECANCELED && c->m.failed_index) *c->m.failed_index = c->failed_index;
    crew_future *f = c->future;
    crew__future_finish(f, c->rc);
    crew__pool_notify(pool);
    crew_future_free(f);
    crew_lock_destroy(&c->err_lock);
    free((async_call *)c);
    crew__pool_done(pool);
}

static void call_init(loop_call *c, crew_pool *pool, int kind, size_t total, crew_progress_fn fn, void *arg) {
    c->pool = pool;
    c->kind = kind;
    atomic_init(&c->unit_ps, 0);
    atomic_init(&c->stop, 0);
    crew_lock_init(&c->err_lock, 0);
    c->rc = 0;
    c->failed_index = SIZE_MAX;
    crew__progress_init(&c->progress, fn, arg, total);
    atomic_init(&c->done.state, 0);
    c->future = NULL;
}

/* Run a call and wait for it: inline on a worker of the pool, else through
 * the injector. Returns the call's result. */
static int call_run(loop_call *c, void *acc) {
    crew_pool *pool = c->pool;
    if (crew__proc_child(pool)) { /* nested in a worker process: run it here */
        run_root(NULL, c, acc, false);
        crew_lock_destroy(&c->err_lock);
        return c->rc;
    }
    int rc = crew__pool_accept(pool);
    if (rc != 0) return rc;
    crew__worker *w = crew__pool_self(pool);
    if (w) {
        run_root(w, c, acc, false);
    } else {
        range_job root = {.task = {job_run}, .call = c, .origin = SIZE_MAX, .acc = acc, .root = true};
        rc = crew__pool_push(pool, &root.task);
        if (rc == 0) {
            /* The push woke one worker to take the root; wake the others
             * now too, so that they wait for its first split awake instead
             * of being woken one after another. */
            size_t pieces = c->nunits / c->grain, n = pool->nworkers;
            if (pieces > 1) crew__pool_wake_more(pool, (pieces < n ? pieces : n) - 1);
            crew__latch_wait(pool, &c->done);
        }
    }
    crew__pool_done(pool);
    crew_lock_destroy(&c->err_lock);
    return rc != 0 ? rc : c->rc;
}

int crew_pool_for(crew_pool *pool, const crew_for *loop) {
    if (!pool || !loop || !loop->body || loop->end < loop->begin) return CREW_EINVAL;
    loop_call c;
    c.f = *loop;
    call_init(&c, pool, LOOP_FOR, loop->end - loop->begin, loop->progress, loop->progress_arg);
    c.nunits = loop->end - loop->begin;
    c.grain = loop->grain ? loop->grain : 1;
    return call_run(&c, NULL);
}

/* Leaves of an automatic reduce: enough for any balance, few enough that
 * walking them costs nothing next to the work. Depends on the length only. */
#define AUTO_LEAVES 1024

int crew_pool_reduce(crew_pool *pool, const crew_reduce *reduce) {
    if (!pool || !reduce || !reduce->body || !reduce->combine || !reduce->identity || !reduce->result ||
        reduce->size == 0 || reduce->end < reduce->begin)
        return CREW_EINVAL;
    loop_call c;
    c.r = *reduce;
    size_t len = reduce->end - reduce->begin;
    call_init(&c, pool, LOOP_REDUCE, len, reduce->progress, reduce->progress_arg);
    c.leaf = reduce->grain ? reduce->grain : (len + AUTO_LEAVES - 1) / AUTO_LEAVES;
    if (c.leaf == 0) c.leaf = 1;
    c.nunits = len / c.leaf + (len % c.leaf != 0);
    c.grain = 1;
    acc_buf top;
    void *acc = acc_get(&c, &top);
    if (!acc) {
        crew_lock_destroy(&c.err_lock);
        return CREW_ENOMEM;
    }
    int rc = call_run(&c, acc);
    if (rc == 0) memcpy(reduce->result, acc, reduce->size);
    acc_put(&top);
    return rc;
}

static int map_check(crew_pool *pool, const crew_map *m) {
    if (!pool || !m || !m->fn) return CREW_EINVAL;
    if (m->count && ((m->in_size && !m->in) || (m->out_size && !m->out))) return CREW_EINVAL;
    return 0;
}

static void map_init(loop_call *c, crew_pool *pool, const crew_map *m) {
    c->m = *m;
    call_init(c, pool, LOOP_MAP, m->count, m->progress, m->progress_arg);
    c->chunk = m->chunk_size ? m->chunk_size : 1;
    c->nunits = m->count / c->chunk + (m->count % c->chunk != 0);
    c->grain = 1;
}

int crew_pool_map(crew_pool *pool, const crew_map *map) {
    int rc = map_check(pool, map);
    if (rc != 0) return rc;
    loop_call c;
    map_init(&c, pool, map);
    rc = call_run(&c, NULL);
    if (rc != 0 && rc != CREW_ECANCELED && c.failed_index != SIZE_MAX && map->failed_index)
        *map->failed_index = c.failed_index;
    return rc;
}

int crew_pool_map_async(crew_pool *pool, const crew_map *map, crew_future **out) {
    int rc = map_check(pool, map);
    if (rc != 0 || !out) return rc ? rc : CREW_EINVAL;
    if (crew__proc_child(pool)) { /* nested in a worker process: done at once */
        crew_future *f;
        if ((rc = crew_future_create(&f, 0)) != 0) return rc;
        crew_future_set_running(f);
        rc = crew_pool_map(pool, map);
        if (rc == 0) crew_future_set_result(f, NULL);
        else crew_future_set_error(f, rc);
        *out = f;
        return 0;
    }
    rc = crew__pool_accept(pool);
    if (rc != 0) return rc;
    async_call *a = malloc(sizeof *a);
    crew_future *f = NULL;
    if (!a || (rc = crew_future_create(&f, 0)) != 0) {
        free(a);
        crew__pool_done(pool);
        return rc ? rc : CREW_ENOMEM;
    }
    crew_future_set_running(f);
    map_init(&a->c, pool, map);
    a->c.future = crew_future_ref(f); /* the call's reference */
    a->root = (range_job){.task = {job_run}, .call = &a->c, .origin = SIZE_MAX, .root = true};
    rc = crew__pool_push(pool, &a->root.task);
    if (rc != 0) {
        crew_lock_destroy(&a->c.err_lock);
        free(a);
        crew_future_free(f);
        crew_future_free(f);
        crew__pool_done(pool);
        return rc;
    }
    *out = f;
    return 0;
}
