/* Futures: the counterpart of concurrent.futures.Future, wait() and
 * as_completed().
 *
 * A future is a result that arrives later. One side (a pool, or any code
 * that runs work) completes it: set_running, then set_result or set_error;
 * the other side waits for it with get, asks done/running/cancelled, cancels
 * it while it has not started, and attaches callbacks that run when it
 * completes. The result is a fixed number of bytes (result_size, given at
 * creation), copied in by set_result and out by get.
 *
 * Lifetime: a future is reference-counted. crew_future_create returns it with
 * one reference; crew_future_ref adds one (a pool keeps one for its worker
 * while the caller keeps its own); crew_future_free drops one, and the last
 * drop frees it. Futures are process-private (a process pool completes them
 * in the parent).
 *
 * All functions are thread-safe. A future's state only moves forward:
 * PENDING -> RUNNING -> FINISHED, or PENDING -> CANCELLED.
 */
#ifndef CREW_FUTURE_H
#define CREW_FUTURE_H

#include <stdbool.h>
#include <stddef.h>
#include "export.h"

typedef struct crew_future crew_future;

/* Called once when the future completes (finished or cancelled), in the
 * thread that completes it, or at once in the thread that adds it if the
 * future is already complete. It must not free the future (the caller of
 * the completing function still uses it). */
typedef void (*crew_future_callback)(crew_future *future, void *arg);

/* A pending future whose result is result_size bytes (0 for none). Returns 0
 * and *out, CREW_EINVAL, CREW_ENOMEM. */
CREW_API int crew_future_create(crew_future **out, size_t result_size);

/* Add a reference; returns `future`. */
CREW_API crew_future *crew_future_ref(crew_future *future);

/* Drop a reference (NULL does nothing); the last one frees the future. */
CREW_API void crew_future_free(crew_future *future);

/* ----------------------------------------------------- completing side */

/* The work is starting (set_running_or_notify_cancel): 0 if the future is
 * now RUNNING; CREW_ECANCELED if it was cancelled, and then the work must
 * not run; CREW_EINVAL if it was already running or finished. */
CREW_API int crew_future_set_running(crew_future *future);

/* Complete with a result (result_size bytes copied from `result`, which may
 * be NULL when result_size is 0), or with an error code (< 0). Wakes every
 * waiter and runs the callbacks. CREW_EINVAL if the future is already
 * finished or cancelled (Python's InvalidStateError), or for code >= 0. */
CREW_API int crew_future_set_result(crew_future *future, const void *result);
CREW_API int crew_future_set_error(crew_future *future, int code);

/* ------------------------------------------------------- waiting side */

/* Wait up to `timeout` for the future to complete. 0 and the result copied
 * into `result` (if not NULL); the work's error code; CREW_ECANCELED if it
 * was cancelled; CREW_ETIMEDOUT. Blocks. */
CREW_API int crew_future_get(crew_future *future, void *result, double timeout);

/* Cancel the future if it has not started: 0 (also if it was already
 * cancelled); CREW_EBUSY if it is running or finished. A cancel wakes the
 * waiters and runs the callbacks. */
CREW_API int crew_future_cancel(crew_future *future);

/* Snapshots: completed (finished or cancelled), running, cancelled. */
CREW_API bool crew_future_done(const crew_future *future);
CREW_API bool crew_future_running(const crew_future *future);
CREW_API bool crew_future_cancelled(const crew_future *future);

/* Run cb(future, arg) when the future completes (at once if it has).
 * Callbacks run in the order they were added. 0, CREW_EINVAL, CREW_ENOMEM. */
CREW_API int crew_future_add_done_callback(crew_future *future, crew_future_callback cb, void *arg);

/* ------------------------------------------------------ many at once */

typedef enum crew_future_wait_mode {
    CREW_ALL_COMPLETED = 0,    /* every future completed */
    CREW_FIRST_COMPLETED,      /* at least one completed */
    CREW_FIRST_EXCEPTION,      /* one finished with an error, or all completed */
} crew_future_wait_mode;

/* Wait until the condition `mode` holds for futures[0..n-1]
 * (concurrent.futures.wait). Returns how many are complete (>= 0, a future
 * listed twice counting twice), or CREW_ETIMEDOUT when the condition did not
 * hold in time, CREW_EINVAL, CREW_ENOMEM.
 * Which ones are done: crew_future_done. Blocks. */
CREW_API int crew_future_wait(crew_future *const *futures, size_t n, crew_future_wait_mode mode, double timeout);

/* An iterator over futures in the order they complete (as_completed). */
typedef struct crew_future_iter crew_future_iter;

/* Start iterating over futures[0..n-1] (the array is copied and each future
 * referenced until crew_future_iter_free). 0 and *out, CREW_EINVAL,
 * CREW_ENOMEM. */
CREW_API int crew_future_iter_start(crew_future_iter **out, crew_future *const *futures, size_t n);

/* The index of the next future to complete, waiting up to `timeout` (each
 * index once; those already complete first). 0 and *index; CREW_EOF when all
 * n have been returned; CREW_ETIMEDOUT. Blocks. */
CREW_API int crew_future_iter_next(crew_future_iter *it, size_t *index, double timeout);

/* Stop iterating (NULL does nothing). */
CREW_API void crew_future_iter_free(crew_future_iter *it);

#endif
