/* Pools: the counterparts of multiprocessing.Pool, multiprocessing.pool.
 * ThreadPool and concurrent.futures' executors.
 *
 * A pool runs tasks on a fixed set of workers. One API serves every kind:
 * CREW_THREADS, CREW_PROCESSES and CREW_MPI (not yet); changing the kind
 * does not change a correct program's results.
 *
 * A task is `int fn(const void *in, void *out, void *ctx)`: read one input
 * item, write one output item, return 0 or a negative error code. Items have
 * fixed sizes given with each call; `ctx` is shared by all tasks of a call.
 *
 *   submit      one task -> a crew_future           (apply_async, submit)
 *   map         out[i] = fn(in[i]), blocking        (map)
 *   map_async   the same, one future for all        (map_async)
 *   imap        results streamed in input order or  (imap, imap_unordered)
 *               as they finish, inputs optionally pulled lazily
 *   for/reduce  a loop body over an index range, split adaptively (OpenMP's
 *               parallel for / reduction, TBB's parallel_for/reduce)
 *   group       many fn(arg) calls without a future each, then one wait for
 *               all (oneTBB's task_group, OpenMP's task + taskwait)
 *
 * The thread pool schedules by work stealing: each worker owns a deque of
 * tasks and steals from the others when it runs dry; work from outside the
 * pool enters through a shared injector queue. Idle workers sleep (no CPU
 * is used by an idle pool) and are woken as work arrives.
 *
 * Nesting: a task may call submit, map, for, reduce or imap on the pool it
 * runs on and wait for the result (crew_future_get, crew_future_wait and
 * crew_imap_next included). A waiting worker runs other tasks meanwhile, so
 * nesting never deadlocks, whatever the depth or the number of workers.
 * A task that blocks on anything else (a lock, a queue, a sleep) blocks its
 * worker.
 *
 * Process pools (CREW_PROCESSES): the same scheduler runs in this process,
 * but each worker thread runs the user's code (tasks, loop bodies, the
 * initializer) in a child process of its own, started when the pool is
 * created and replaced, at the worker's next call, when it dies. Futures, callbacks,
 * progress and imap's input callback stay in this process. What differs
 * from a thread pool:
 *  - a child sees this process's memory as it was when it was forked.
 *    Input items (in_size > 0) and outputs are copied through the shared
 *    arena, or not copied at all when they already lie in it
 *    (crew_shm_alloc). `ctx`, borrowed inputs (in_size 0) and pointers
 *    inside items are passed as they are: they must point to memory set
 *    before the pool was created, or into the arena or another MAP_SHARED
 *    mapping. A task's writes to ordinary memory stay in its child.
 *  - a task calling the pool (nested submit, map, for, reduce, imap) runs
 *    that work itself, in order, in its child, with the same results.
 *  - a child that dies (a signal, _exit, the OOM killer) fails only what it
 *    was running, with CREW_EWORKERDIED: the item (map, imap, submit) or the
 *    piece of a for/reduce, after `retries` attempts on a new child. The
 *    pool replaces the child and goes on; nothing hangs. (One that died
 *    idle fails nothing.)
 *  - terminate kills the children at once: what they ran fails with
 *    CREW_ECANCELED.
 *  - after a failure, the rest of a map is skipped a chunk at a time.
 *  - children die with this process (PR_SET_PDEATHSIG, SIGKILL).
 *
 * Lifetime: create -> (work) -> close -> join -> free, or terminate at any
 * point. crew_pool_free on an open pool closes and joins it first.
 *
 * Fork: a pool belongs to the process that created it. In a forked child
 * its workers do not exist; every call there returns CREW_ECHILD, and
 * crew_pool_free only releases memory.
 */
#ifndef CREW_POOL_H
#define CREW_POOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "export.h"
#include "future.h"

typedef struct crew_pool crew_pool;

typedef enum crew_pool_kind {
    CREW_THREADS = 0,          /* workers are threads of this process */
    CREW_PROCESSES,            /* the user's code runs in forked processes */
    CREW_MPI,                  /* workers are MPI ranks (not yet) */
} crew_pool_kind;

/* A task: read *in, write *out (out_size bytes; NULL when out_size is 0),
 * return 0 or a negative error code (which becomes the future's or map's
 * result; a positive return is reported as CREW_EINVAL). */
typedef int (*crew_task_fn)(const void *in, void *out, void *ctx);

/* Progress of a map, for, reduce or imap: `done` of `total` items (for/
 * reduce: iterations; imap with lazy input: total is 0 until the input
 * ends). Calls for one operation never overlap, `done` never decreases, and
 * the last call has done == total (unless the operation failed or was
 * cancelled). Called on a pool thread or the caller's; keep it short. */
typedef void (*crew_progress_fn)(size_t done, size_t total, void *arg);

/* A ready-made progress callback: draws a progress bar on stderr, at most
 * ten times a second and once at the end, when stderr is a terminal; does
 * nothing otherwise. `arg` is a label (const char *) or NULL. */
CREW_API void crew_progress_bar(size_t done, size_t total, void *arg);

typedef struct crew_pool_options {
    crew_pool_kind kind;       /* CREW_THREADS (the default) */
    size_t workers;            /* 0: crew_cpu_count() */
    /* Run once in each worker before it takes any task (Pool(initializer=,
     * initargs=)). If it returns non-zero in any worker, crew_pool_create
     * fails with that code (Python would restart the worker forever). */
    int (*initializer)(void *arg);
    void *initarg;
    /* Backpressure: at most this many submitted tasks wait to start;
     * crew_pool_submit from outside the pool blocks while that many wait.
     * 0: unbounded. (Submits from the pool's own tasks are never held.) */
    size_t max_pending;
    const char *name;          /* worker thread name prefix; "crew-pool" */
    /* CREW_PROCESSES only: */
    size_t max_tasks_per_child; /* replace a worker process after this many
                                   calls (a chunk counts once); 0: never */
    unsigned retries;          /* run again, on a new worker process, an item
                                  whose worker died, up to this many times
                                  before it fails with CREW_EWORKERDIED */
} crew_pool_options;

/* Start a pool (opts may be NULL). Returns 0 and *out once every worker has
 * run its initializer; CREW_EINVAL (bad options), CREW_ENOSYS (a kind not
 * built), CREW_EAGAIN (the system refused a thread or process), CREW_ENOMEM,
 * the initializer's code, or CREW_EWORKERDIED (a worker process died in
 * it). Nothing is left running on failure. Blocks while workers start. */
CREW_API int crew_pool_create(crew_pool **out, const crew_pool_options *opts);

/* Accept no more work from outside the pool: submit/map/for/imap called
 * from other threads get CREW_ESHUTDOWN. Work already accepted runs to the
 * end, including what its tasks submit. Never blocks. 0 or CREW_EINVAL. */
CREW_API int crew_pool_close(crew_pool *pool);

/* Stop now: close, then cancel every task that has not started (futures
 * become cancelled; maps, fors and imaps in progress end with
 * CREW_ECANCELED). Tasks already running finish (a thread cannot be stopped
 * safely). Never blocks; call join to wait for the workers. */
CREW_API int crew_pool_terminate(crew_pool *pool);

/* Wait up to `timeout` for all work to finish and the workers to exit.
 * The pool must be closed or terminated first (CREW_EINVAL otherwise, as
 * Python's ValueError). 0, CREW_ETIMEDOUT (join again later), CREW_EDEADLK
 * when called from one of the pool's own tasks. Blocks. */
CREW_API int crew_pool_join(crew_pool *pool, double timeout);

/* Close, join and release the pool (NULL does nothing). Blocks until all
 * accepted work has finished. Must not be called from the pool's tasks. */
CREW_API void crew_pool_free(crew_pool *pool);

/* The number of workers. */
CREW_API size_t crew_pool_workers(const crew_pool *pool);

/* CREW_PROCESSES: how many worker processes have died so far (killed, by
 * terminate too, or exited in a task; recycling by max_tasks_per_child does
 * not count), and
 * how the last one ended (*last gets its exit status, or minus the signal
 * that killed it, as crew_process_exitcode; left alone when none died). A
 * task that was running in it failed with CREW_EWORKERDIED (after the
 * retries). 0 for a thread pool. Never blocks. */
CREW_API size_t crew_pool_worker_deaths(const crew_pool *pool, int *last);

/* The pool whose task the calling thread is running, or NULL. */
CREW_API crew_pool *crew_pool_current(void);

/* In a task: the index of the item being processed (map, map_async, imap:
 * the input index; submit: the pool's submission count at submit, from 0;
 * a group's task has none: SIZE_MAX).
 * Seed per-task random streams with it: crew_rng_init(&rng, seed,
 * crew_pool_task_index()) gives results independent of the schedule.
 * SIZE_MAX outside a task. */
CREW_API size_t crew_pool_task_index(void);

/* ----------------------------------------------------------------- submit */

typedef struct crew_task {
    crew_task_fn fn;
    const void *in;            /* input item */
    size_t in_size;            /* > 0: *in is copied at submit (the caller may
                                  reuse it at once); 0: `in` is passed as is
                                  and must stay valid until the task ends */
    size_t out_size;           /* bytes of result the future carries */
    void *ctx;                 /* passed to fn; borrowed */
    /* Optional, as apply_async's: `callback` gets the result after success,
     * `error_callback` the code after a failure. They run on the worker that
     * ran the task, before the future completes (so once get() returns they
     * have run); a cancelled task calls neither. */
    void (*callback)(const void *result, void *arg);
    void (*error_callback)(int code, void *arg);
    void *callback_arg;
} crew_task;

/* Queue one task (apply_async / Executor.submit). Returns 0 and a future
 * in *out (the caller owns one reference: crew_future_free it), whose
 * result is out_size bytes. CREW_EINVAL, CREW_ENOMEM, CREW_ESHUTDOWN (pool
 * closed). Blocks only while max_pending tasks already wait. Cancel the
 * future to drop the task before it starts.
 * Called from one of the pool's own tasks on a worker that already has 256
 * tasks queued, it runs the task at once and returns it completed (OpenMP
 * runtimes throttle task creation the same way); so a task must not wait
 * for its submitter to do something after the submit, except through the
 * pool (futures, map, ...). */
CREW_API int crew_pool_submit(crew_pool *pool, const crew_task *task, crew_future **out);

/* ------------------------------------------------------------------ group */

/* A task group: run many functions on the pool, fire and forget, then wait
 * for all of them at once (oneTBB's task_group, OpenMP's task + taskwait,
 * Python's asyncio.TaskGroup). Cheaper than submit when no task needs a
 * result of its own: a group's task carries no future, and its error goes
 * to the group. The first failure cancels the group: its tasks that have
 * not started are skipped, and crew_group_wait returns that failure.
 * Any thread may add tasks, the group's own tasks included (recursive
 * splitting: a task adds its sub-tasks to the group it runs in).
 *
 * Throttling: a thread pool's worker that adds a task while 64 tasks
 * already wait on its own deque, or an outside thread while about 64 per
 * worker of the group's tasks are unfinished (queued or running; the count
 * is kept loosely, see group.c), runs the task at once, in the calling
 * thread, before crew_group_run returns (as OpenMP runtimes do with tasks,
 * and as Java's CallerRunsPolicy does); the queue stays short and no
 * parallelism is lost. So does a worker whose queued tasks the other
 * workers take as fast as it queues them, for a short burst (at most
 * 4096 tasks or 50 us): they are then cheaper to run than to queue. So a group's task must not wait for something its
 * adder does after adding it. A process pool runs every task in a child:
 * `arg` is passed as is, and must mean the same there (global memory set
 * before the pool was created, the arena, or a number cast to a pointer). */
typedef struct crew_group crew_group;

/* A group's task: return 0, or a negative code that fails the group (a
 * positive return counts as CREW_EINVAL). */
typedef int (*crew_group_fn)(void *arg);

/* Make an empty group on `pool`. 0, CREW_EINVAL, CREW_ENOMEM. Never blocks.
 * Safe in a process pool's child (its tasks then run at once there). */
CREW_API int crew_group_create(crew_group **out, crew_pool *pool);

/* Run fn(arg) on the pool as part of the group. 0 (queued, or run at once
 * as described above: a failure then goes to the group, not to this
 * call); CREW_ECANCELED (the group is cancelled or failed: nothing is
 * queued), CREW_ESHUTDOWN (pool closed, from outside the pool),
 * CREW_ECHILD (another process's pool), CREW_EINVAL, CREW_ENOMEM. Does not
 * block except to run a task at once. max_pending does not apply. */
CREW_API int crew_group_run(crew_group *g, crew_group_fn fn, void *arg);

/* Wait up to `timeout` for every task of the group to finish. Returns 0
 * when all succeeded, else the first failure's code, or CREW_ECANCELED
 * (cancelled, or its tasks were dropped by crew_pool_terminate); the group
 * is then empty and no longer cancelled, ready to be used again. (With
 * several threads waiting on one group, each returns once it is empty, but
 * only the first to return gets the failure: it resets the group.)
 * CREW_ETIMEDOUT: tasks are still running (wait again later). Blocks; a
 * worker of the pool waiting on it runs other tasks meanwhile. */
CREW_API int crew_group_wait(crew_group *g, double timeout);

/* Cancel the group: its tasks not yet started are skipped, and
 * crew_group_wait returns CREW_ECANCELED (unless a task failed first).
 * Running tasks finish; they may poll crew_group_cancelled to stop early.
 * 0 or CREW_EINVAL. Never blocks. */
CREW_API int crew_group_cancel(crew_group *g);

/* Whether the group was cancelled or one of its tasks failed (thread pools;
 * in a process pool's child it reads a stale copy). Never blocks. */
CREW_API bool crew_group_cancelled(const crew_group *g);

/* Cancel what has not started, wait for the rest, and release the group
 * (NULL does nothing). Must not be called from one of the group's tasks. */
CREW_API void crew_group_free(crew_group *g);

/* -------------------------------------------------------------------- map */

typedef struct crew_map {
    crew_task_fn fn;
    const void *in;            /* count items of in_size bytes (in_size 0:
                                  fn gets `in` itself every time) */
    size_t in_size;
    void *out;                 /* count items of out_size bytes; may be NULL
                                  when out_size is 0 */
    size_t out_size;
    size_t count;
    void *ctx;
    /* The smallest piece of work a worker takes: whole chunks only, maybe
     * several in a row. 0: automatic (the range is split adaptively, as
     * crew_pool_for does, so idle workers always find work). */
    size_t chunk_size;
    crew_progress_fn progress; /* optional; done/total in items */
    void *progress_arg;
    /* Optional: receives the index of the failed item when the map returns
     * a task's error code (the lowest failed index among the items that
     * ran); left alone otherwise. map_async writes it before its future
     * completes. */
    size_t *failed_index;
} crew_map;

/* out[i] = fn(in[i]) for every i < count, in parallel; returns when all
 * are done. 0; the first failed task's code (the rest of the map is
 * skipped: items not yet started do not run), with *failed_index;
 * CREW_ECANCELED if the pool was terminated; CREW_EINVAL, CREW_ESHUTDOWN.
 * `in` and `out` are borrowed for the call. Blocks (a worker calling it
 * runs the map's tasks meanwhile). */
CREW_API int crew_pool_map(crew_pool *pool, const crew_map *map);

/* The same without waiting: returns 0 and a future (no result bytes) that
 * completes with map's return value. `in`, `out`, `ctx` and `failed_index`
 * must stay valid until it completes; the crew_map struct itself is copied.
 * The future cannot be cancelled (it is running from the start); terminate
 * the pool to stop it. */
CREW_API int crew_pool_map_async(crew_pool *pool, const crew_map *map, crew_future **out);

/* ------------------------------------------------------------------- imap */

/* Lazy input for imap: write item number `index` (in_size bytes) to *item
 * and return 1, or return 0 at the end of the input, or a negative code to
 * end it with that error. Called only in the thread that calls
 * crew_imap_next (never concurrently), as results are consumed. */
typedef int (*crew_input_fn)(void *item, size_t index, void *arg);

typedef struct crew_imap {
    crew_task_fn fn;
    void *ctx;
    /* Input: either `count` items at `in` (borrowed until crew_imap_free),
     * or, when `input` is set, items pulled from it one by one. */
    const void *in;
    size_t count;
    crew_input_fn input;
    void *input_arg;
    size_t in_size, out_size;
    bool unordered;            /* true: as they finish (imap_unordered) */
    size_t chunk_size;         /* items per task; 0: 1, as in Python */
    /* The most items taken from the input and not yet returned by
     * crew_imap_next; memory stays bounded by it however long the input.
     * 0: 8 chunks per worker. */
    size_t window;
    crew_progress_fn progress;
    void *progress_arg;
} crew_imap;

typedef struct crew_imap_iter crew_imap_iter;

/* Start streaming fn over the input. 0 and *out; CREW_EINVAL, CREW_ENOMEM,
 * CREW_ESHUTDOWN. Does not block; the first items are taken from the input
 * here. */
CREW_API int crew_pool_imap(crew_pool *pool, const crew_imap *imap, crew_imap_iter **out);

/* The next result: waits up to `timeout`, then copies it to *out (if not
 * NULL) and its input index to *index (if not NULL). Returns 0; the task's
 * error code for a failed item (with *index; the next call goes on with the
 * following items, as Python's imap raises and continues); the input
 * callback's code (the input ends there); CREW_EOF after the last result;
 * CREW_ETIMEDOUT; CREW_ECANCELED if the pool was terminated. Blocks.
 * One consumer thread at a time. */
CREW_API int crew_imap_next(crew_imap_iter *it, void *out, size_t *index, double timeout);

/* Stop streaming and release the iterator (NULL does nothing): items not yet
 * started are dropped, running ones are waited for. Blocks while they run. */
CREW_API void crew_imap_free(crew_imap_iter *it);

/* --------------------------------------------------------- for and reduce */

typedef struct crew_for {
    size_t begin, end;         /* the range [begin, end) */
    /* The loop body over a sub-range [b, e): return 0, or a negative code to
     * stop the loop (sub-ranges not yet started are skipped). */
    int (*body)(size_t b, size_t e, void *ctx);
    void *ctx;
    /* The smallest sub-range worth a task; 0: automatic. Sub-ranges are
     * split further only while workers need work (adaptive splitting). */
    size_t grain;
    crew_progress_fn progress; /* done/total in iterations */
    void *progress_arg;
} crew_for;

/* Run body over [begin, end) in parallel and return when all of it has run.
 * 0; a failing body's code (of the failed sub-range lowest in the range;
 * the sub-ranges not yet started are skipped); CREW_ECANCELED if
 * the pool was terminated; CREW_EINVAL, CREW_ESHUTDOWN. Blocks (a worker
 * calling it runs parts of the loop). */
CREW_API int crew_pool_for(crew_pool *pool, const crew_for *loop);

typedef struct crew_reduce {
    size_t begin, end;         /* the range [begin, end) */
    /* Fold [b, e) into `acc` (size bytes, starting as *identity). 0 or a
     * negative code. */
    int (*body)(size_t b, size_t e, void *acc, void *ctx);
    /* acc = acc (+) other; must be associative. */
    void (*combine)(void *acc, const void *other, void *ctx);
    const void *identity;      /* size bytes */
    size_t size;
    void *result;              /* receives the reduction (size bytes) */
    void *ctx;
    /* Leaf size: the range is cut into leaves of `grain` iterations (0:
     * automatic, from the range's length only) and the leaves' partial
     * results are combined along a fixed binary tree. So the result is the
     * same, bit for bit, whatever the number of workers or the schedule,
     * floating-point sums included (OpenMP's reduction is not). */
    size_t grain;
    crew_progress_fn progress;
    void *progress_arg;
} crew_reduce;

/* Reduce body over [begin, end) into *result. 0, the body's first error
 * code, CREW_ECANCELED, CREW_EINVAL, CREW_ENOMEM, CREW_ESHUTDOWN. Blocks
 * (a worker calling it runs parts of it). An empty range gives *identity. */
CREW_API int crew_pool_reduce(crew_pool *pool, const crew_reduce *reduce);

#endif
