/* Queues: the counterparts of queue.Queue, LifoQueue, PriorityQueue and
 * multiprocessing.Queue / JoinableQueue.
 *
 * A queue holds up to `capacity` items of a fixed `item_size`, copied in by
 * put and out by get (the queue never keeps a caller's pointer). Many
 * threads (and, shared, many processes) may put and get at once.
 *
 * Where the queue lives:
 *   crew_queue_create    private (malloc), or with CREW_SHARED in crew's
 *                        arena, so that it works between this process and
 *                        every process forked after the call;
 *   crew_queue_init      in memory the caller provides (crew_queue_footprint
 *                        bytes), such as a named segment: another process
 *                        that maps the segment, at any address, calls
 *                        crew_queue_attach on it. Everything inside is
 *                        position-independent.
 *
 * Timeouts as everywhere (clock.h). A put with timeout 0 on a full queue
 * returns CREW_EFULL, a get with timeout 0 on an empty one CREW_EEMPTY; a
 * positive timeout that expires gives CREW_ETIMEDOUT.
 *
 * Shutdown (Python 3.13): after crew_queue_shutdown, puts fail at once with
 * CREW_ESHUTDOWN; gets drain what is left and then fail with CREW_ESHUTDOWN;
 * an immediate shutdown also discards what is left, as if task_done'd, and
 * wakes every waiter (join included).
 *
 * How: a FIFO queue is a lock-free ring (no lock on any path: a put and a
 * get each claim their slot with compare-and-swap); LIFO and PRIORITY queues
 * take a robust lock. Sleepers use futexes and are woken only when someone
 * actually sleeps.
 *
 * A shared queue whose user process dies in the middle of an operation:
 * survivors never hang on it and never see a half-written item. An item put
 * by a process that died is there entirely or not at all; an item taken by a
 * process that died is gone with it. (FIFO: a slot claim records the
 * claimer's pid, and whoever the slot blocks finishes a dead claimer's step;
 * LIFO/PRIORITY: the robust lock hands over with CREW_EOWNERDEAD, every
 * operation commits with one store, and the bookkeeping is repaired.)
 * task_done counts of a dead process are lost (a join may then wait for its
 * timeout). A put racing a shutdown may still complete after it.
 *
 * Every call is thread-safe. Fork: a CREW_SHARED queue is shared with the
 * child (that is what it is for); a private queue is copied, and the child's
 * copy is usable only if no other thread of the parent was inside it at the
 * fork.
 */
#ifndef CREW_QUEUE_H
#define CREW_QUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include "export.h"

typedef struct crew_queue crew_queue;

typedef enum crew_queue_kind {
    CREW_FIFO = 0,             /* queue.Queue: first in, first out */
    CREW_LIFO,                 /* queue.LifoQueue: last in, first out */
    CREW_PRIORITY,             /* queue.PriorityQueue: smallest first; equal
                                  items in the order they were put */
} crew_queue_kind;

/* Priority order: negative if a comes before b. */
typedef int (*crew_queue_compare)(const void *a, const void *b);

typedef struct crew_queue_options {
    size_t item_size;          /* bytes per item, > 0 */
    size_t capacity;           /* most items held (0 = 1024); FIFO at most
                                  2^26, the others 2^32 - 2 */
    crew_queue_kind kind;
    crew_queue_compare compare;/* CREW_PRIORITY: NULL orders by the item's first
                                  8 bytes as a signed int64 (the "(priority,
                                  data)" tuple). A function pointer is valid only
                                  in this process and its forked children; use
                                  NULL between unrelated processes. */
    unsigned flags;            /* CREW_SHARED: between processes */
} crew_queue_options;

/* Bytes crew_queue_init needs for these options (0 if they are invalid). */
CREW_API size_t crew_queue_footprint(const crew_queue_options *opts);

/* Create a queue. CREW_SHARED places it in the arena (see shm.h). Returns 0
 * and *out; CREW_EINVAL for bad options, CREW_ENOMEM. */
CREW_API int crew_queue_create(crew_queue **out, const crew_queue_options *opts);

/* Build a queue in caller memory `mem` (aligned to 16 bytes, at least
 * crew_queue_footprint(opts) bytes, which must stay valid until
 * crew_queue_destroy). Returns 0 and *out. */
CREW_API int crew_queue_init(crew_queue **out, void *mem, size_t size, const crew_queue_options *opts);

/* Use a CREW_SHARED queue that another process built with crew_queue_init
 * in memory now mapped at `mem` (at any address). CREW_EINVAL if there is no
 * shared queue there. A priority queue with a `compare` function must only be
 * attached by processes forked from its creator. */
CREW_API int crew_queue_attach(crew_queue **out, void *mem);

/* Free a queue from crew_queue_create (NULL, or a queue from
 * crew_queue_init, does nothing). No thread or process may use it any more:
 * nothing checks, because a process that died blocked in it would look like
 * a user forever. */
CREW_API void crew_queue_free(crew_queue *queue);

/* Invalidate a queue built by crew_queue_init (the memory stays the
 * caller's); as for crew_queue_free, nobody may use it any more. CREW_EINVAL
 * for a queue from crew_queue_create. */
CREW_API int crew_queue_destroy(crew_queue *queue);

/* Copy item_size bytes from `item` into the queue, waiting up to `timeout`
 * for room. 0; CREW_EFULL (timeout 0); CREW_ETIMEDOUT; CREW_ESHUTDOWN.
 * Blocks. Counts one unfinished task (see task_done). */
CREW_API int crew_queue_put(crew_queue *queue, const void *item, double timeout);

/* Take the next item into `item`, waiting up to `timeout`. 0; CREW_EEMPTY
 * (timeout 0); CREW_ETIMEDOUT; CREW_ESHUTDOWN once shut down and empty.
 * Blocks. */
CREW_API int crew_queue_get(crew_queue *queue, void *item, double timeout);

/* Items in the queue now (qsize), and empty/full: snapshots. After a
 * process died in the middle of a put or get on a FIFO queue, its slot may
 * be counted until the next get passes it. */
CREW_API int crew_queue_size(const crew_queue *queue);
CREW_API bool crew_queue_empty(const crew_queue *queue);
CREW_API bool crew_queue_full(const crew_queue *queue);

/* The queue's item size and capacity. */
CREW_API size_t crew_queue_item_size(const crew_queue *queue);
CREW_API size_t crew_queue_capacity(const crew_queue *queue);

/* One item taken earlier is fully processed (JoinableQueue.task_done).
 * CREW_EOVERFLOW if called more times than items were put. */
CREW_API int crew_queue_task_done(crew_queue *queue);

/* Wait until every item ever put has been task_done'd (or an immediate
 * shutdown discarded it). 0 or CREW_ETIMEDOUT. Blocks. */
CREW_API int crew_queue_join(crew_queue *queue, double timeout);

/* Shut the queue down (see above); immediate also empties it. Idempotent. */
CREW_API int crew_queue_shutdown(crew_queue *queue, bool immediate);

#endif
