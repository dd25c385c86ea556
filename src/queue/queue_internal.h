/* Internal to the queue module: the queue's memory layout and what its
 * three files share. queue.c has the API, the block's life cycle, task
 * counting and shutdown; ring.c the FIFO kind (lock-free); locked.c the LIFO
 * and PRIORITY kinds (under a robust lock).
 *
 * One struct in one block of memory: the header below, then the slots (and,
 * for a priority queue, its heap of slot numbers, its stack of free slots and
 * a live flag per slot). Everything is found by offset from the header, so
 * the block works wherever a process maps it.
 */
#ifndef CREW_SRC_QUEUE_INTERNAL_H
#define CREW_SRC_QUEUE_INTERNAL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "crew/queue.h"
#include "crew/sync.h"
#include "deadline.h"

#define CREW__QUEUE_MAGIC 0x51574552u /* "REWQ" */
#define CREW__QUEUE_DEAD 0xdeadbeefu

/* Before sleeping on an empty (or full) queue, look again this many times:
 * in a steady stream the other side usually fills (or drains) it within
 * microseconds, and a futex sleep plus the wake-up it needs costs more. */
#define CREW__QUEUE_SPIN 2000

/* Sleepers in a shared queue look again at least this often: a process that
 * dies after changing the queue, before it woke anyone, must not leave
 * others asleep for good. */
#define CREW__QUEUE_SLICE_NS 100000000 /* 0.1 s */

enum crew__queue_origin { CREW__FROM_MALLOC, CREW__FROM_ARENA, CREW__FROM_CALLER };

struct crew_queue {
    _Atomic uint32_t magic;
    uint32_t kind;
    uint32_t flags;
    uint32_t origin;
    uint64_t item_size;
    uint64_t capacity;
    uint64_t slot_size;          /* stride: [u64 seq (FIFO, PRIORITY)] item */
    uint64_t slots_off;          /* offsets from the header */
    uint64_t heap_off;           /* priority: uint32 slot numbers, a min-heap */
    uint64_t free_off;           /* priority: uint32 stack of free slots */
    uint64_t live_off;           /* priority: uint8 per slot, 1 = holds an item */
    crew_queue_compare compare;  /* priority; NULL = int64 key */

    /* LIFO and PRIORITY (locked.c): everything below `lock` up to the ring
     * fields is read and written with `lock` held; `state` is also read
     * without it, for size() snapshots. */
    crew_lock lock;
    crew_cond not_empty;         /* getters wait; over `lock` */
    crew_cond not_full;          /* putters wait; over `lock` */
    _Atomic uint64_t state;      /* first slot | count << 32 */
    uint64_t next_seq;           /* priority: insertion order, for stability */
    uint32_t free_top;           /* priority: entries in the free stack */
    uint32_t dirty;              /* priority: bookkeeping being updated */

    /* FIFO (ring.c). Each on its own cache line: producers own `tail`,
     * consumers `head`; the waiter counts are read by the other side after
     * every operation. */
    _Alignas(64) _Atomic uint64_t tail;     /* next ticket to put */
    _Alignas(64) _Atomic uint64_t head;     /* next ticket to get */
    _Alignas(64) _Atomic uint32_t getters;  /* getters asleep, or about to be */
    _Atomic uint32_t items_seq;             /* futex: bumped to wake getters */
    _Alignas(64) _Atomic uint32_t putters;  /* putters asleep, or about to be */
    _Atomic uint32_t space_seq;             /* futex: bumped to wake putters */

    /* Every kind (queue.c): lock-free counters. */
    _Alignas(64) _Atomic uint64_t unfinished; /* put, not yet task_done */
    _Atomic uint32_t joiners;                 /* join callers asleep */
    _Atomic uint32_t join_seq;                /* futex: bumped when unfinished hits 0 */
    _Atomic uint32_t shutdown;                /* enum below */
};

enum { CREW__OPEN = 0, CREW__SHUTDOWN = 1, CREW__SHUTDOWN_NOW = 2 };

static inline unsigned char *crew__queue_slot(struct crew_queue *q, uint64_t i) {
    return (unsigned char *)q + q->slots_off + i * q->slot_size;
}

static inline bool crew__queue_shared(const struct crew_queue *q) { return (q->flags & CREW_SHARED) != 0; }

/* A deadline no later than `d` and, for a shared queue, no later than one
 * slice from now (see CREW__QUEUE_SLICE_NS). */
static inline crew__deadline crew__queue_slice(const struct crew_queue *q, const crew__deadline *d) {
    crew__deadline s = *d;
    if (crew__queue_shared(q)) {
        int64_t end = crew__now_ns() + CREW__QUEUE_SLICE_NS;
        if (end < s.ns) s.ns = end;
    }
    return s;
}

/* The last of the unfinished tasks is done: wake join. */
void crew__queue_wake_joiners(struct crew_queue *q);

/* locked.c: LIFO and PRIORITY. */
void crew__locked_init(struct crew_queue *q);
int crew__locked_put(struct crew_queue *q, const void *item, const crew__deadline *d);
int crew__locked_get(struct crew_queue *q, void *item, const crew__deadline *d);
uint64_t crew__locked_size(const struct crew_queue *q);
/* Discard every item; returns how many. */
uint64_t crew__locked_drain(struct crew_queue *q);
/* Wake every sleeper (shutdown). */
void crew__locked_wake_all(struct crew_queue *q);

/* ring.c: FIFO. */
void crew__ring_init(struct crew_queue *q);
int crew__ring_put(struct crew_queue *q, const void *item, const crew__deadline *d);
int crew__ring_get(struct crew_queue *q, void *item, const crew__deadline *d);
uint64_t crew__ring_size(const struct crew_queue *q);
uint64_t crew__ring_drain(struct crew_queue *q);
void crew__ring_wake_all(struct crew_queue *q);

#endif
