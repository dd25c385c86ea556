/* crew_queue: the API, the queue block's life cycle, task counting and
 * shutdown. The kinds live in ring.c (FIFO) and locked.c (LIFO, PRIORITY);
 * see queue_internal.h for the layout.
 *
 * Task counting is the same for every kind and needs no lock: `unfinished`
 * is incremented before an item can be seen (so join never returns while a
 * put is under way) and decremented by task_done (or by a put that failed,
 * or by an immediate shutdown's drain). Whoever brings it to 0 bumps
 * `join_seq` and wakes the joiners. A joiner reads `join_seq`, announces
 * itself in `joiners`, then checks `unfinished` before sleeping on
 * `join_seq` (all seq_cst), so that wake-up cannot be missed.
 *
 * Shutdown is an atomic flag: OPEN, then SHUTDOWN or SHUTDOWN_NOW (never
 * back). Puts check it first; gets check it when they find the queue empty;
 * shutdown wakes every sleeper of the kind, who then look at it.
 */
#include "crew/queue.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "crew/shm.h"
#include "futex.h"
#include "queue_internal.h"

#define DEFAULT_CAPACITY 1024
#define MAX_CAPACITY ((size_t)UINT32_MAX - 1)
/* The ring compares tickets by their low bits while a slot is claimed. */
#define MAX_FIFO_CAPACITY ((size_t)1 << 26)

/* ---------------------------------------------------------------- layout */

static size_t round_up(size_t n, size_t a) { return (n + a - 1) / a * a; }

/* Fills q's layout fields from opts; returns the footprint, 0 if invalid
 * (including sizes that would overflow). */
static size_t layout(const crew_queue_options *opts, struct crew_queue *q) {
    if (opts == NULL || opts->item_size == 0 || opts->item_size > ((size_t)1 << 40)) return 0;
    if ((opts->flags & ~CREW_SHARED) != 0) return 0;
    if (opts->kind != CREW_FIFO && opts->kind != CREW_LIFO && opts->kind != CREW_PRIORITY) return 0;
    if (opts->kind == CREW_PRIORITY && opts->compare == NULL && opts->item_size < sizeof(int64_t)) return 0;
    size_t cap = opts->capacity ? opts->capacity : DEFAULT_CAPACITY;
    if (cap > (opts->kind == CREW_FIFO ? MAX_FIFO_CAPACITY : MAX_CAPACITY)) return 0;
    bool prio = opts->kind == CREW_PRIORITY;
    bool seq = opts->kind != CREW_LIFO; /* FIFO: ring sequence; PRIORITY: put order */
    size_t slot = round_up(opts->item_size + (seq ? sizeof(uint64_t) : 0), 8);
    size_t off = round_up(sizeof(struct crew_queue), 64), bytes;
    q->slots_off = off;
    if (__builtin_mul_overflow(slot, cap, &bytes) || __builtin_add_overflow(off, bytes + 63, &off)) return 0;
    off = off / 64 * 64;
    if (prio) {
        /* heap and free stack: 4 bytes per slot each; live flags: 1 */
        if (cap > (SIZE_MAX - off - 64) / 9) return 0;
        q->heap_off = off;
        off += cap * sizeof(uint32_t);
        q->free_off = off;
        off += cap * sizeof(uint32_t);
        q->live_off = off;
        off = round_up(off + cap, 64);
    }
    q->kind = opts->kind;
    q->item_size = opts->item_size;
    q->capacity = cap;
    q->slot_size = slot;
    q->compare = opts->compare;
    q->flags = opts->flags;
    return off;
}

size_t crew_queue_footprint(const crew_queue_options *opts) {
    struct crew_queue scratch;
    return layout(opts, &scratch);
}

/* ------------------------------------------------------------- life cycle */

static int build(struct crew_queue *q, size_t size, const crew_queue_options *opts,
                 enum crew__queue_origin origin) {
    size_t need = crew_queue_footprint(opts);
    if (need == 0 || size < need) return CREW_EINVAL; /* before touching the memory */
    memset(q, 0, sizeof *q);
    layout(opts, q);
    q->origin = origin;
    int rc = crew_lock_init(&q->lock, opts->flags);
    if (rc != 0) return rc;
    crew_cond_init(&q->not_empty, &q->lock, opts->flags);
    crew_cond_init(&q->not_full, &q->lock, opts->flags);
    if (q->kind == CREW_FIFO) crew__ring_init(q);
    else crew__locked_init(q);
    atomic_store_explicit(&q->magic, CREW__QUEUE_MAGIC, memory_order_release);
    return 0;
}

int crew_queue_create(crew_queue **out, const crew_queue_options *opts) {
    if (out == NULL) return CREW_EINVAL;
    size_t size = crew_queue_footprint(opts);
    if (size == 0) return CREW_EINVAL;
    bool shared = (opts->flags & CREW_SHARED) != 0;
    void *mem = shared ? crew_shm_alloc(size) : aligned_alloc(64, round_up(size, 64));
    if (mem == NULL) return CREW_ENOMEM;
    int rc = build(mem, size, opts, shared ? CREW__FROM_ARENA : CREW__FROM_MALLOC);
    if (rc != 0) {
        if (shared) crew_shm_free(mem);
        else free(mem);
        return rc;
    }
    *out = mem;
    return 0;
}

int crew_queue_init(crew_queue **out, void *mem, size_t size, const crew_queue_options *opts) {
    if (out == NULL || mem == NULL || (uintptr_t)mem % 16 != 0) return CREW_EINVAL;
    int rc = build(mem, size, opts, CREW__FROM_CALLER);
    if (rc == 0) *out = mem;
    return rc;
}

static bool valid(const crew_queue *q) {
    return q != NULL &&
           atomic_load_explicit(&((crew_queue *)q)->magic, memory_order_acquire) == CREW__QUEUE_MAGIC;
}

int crew_queue_attach(crew_queue **out, void *mem) {
    if (out == NULL || !valid(mem) || !crew__queue_shared(mem)) return CREW_EINVAL;
    *out = mem;
    return 0;
}

/* The caller promises no thread or process uses the queue any more. (Waiter
 * counts cannot prove that: a process that died blocked in the queue stays
 * counted forever.) */
static void teardown(struct crew_queue *q) {
    crew_cond_destroy(&q->not_empty);
    crew_cond_destroy(&q->not_full);
    crew_lock_destroy(&q->lock);
    atomic_store_explicit(&q->magic, CREW__QUEUE_DEAD, memory_order_relaxed);
}

void crew_queue_free(crew_queue *queue) {
    if (!valid(queue) || queue->origin == CREW__FROM_CALLER) return;
    enum crew__queue_origin origin = queue->origin;
    teardown(queue);
    if (origin == CREW__FROM_ARENA) crew_shm_free(queue);
    else free(queue);
}

int crew_queue_destroy(crew_queue *queue) {
    if (!valid(queue) || queue->origin != CREW__FROM_CALLER) return CREW_EINVAL;
    teardown(queue);
    return 0;
}

/* ----------------------------------------------------------- task counts */

void crew__queue_wake_joiners(struct crew_queue *q) {
    atomic_fetch_add(&q->join_seq, 1);
    if (atomic_load(&q->joiners) != 0) crew__futex_wake(&q->join_seq, INT_MAX, crew__queue_shared(q));
}

/* Take up to n off `unfinished`; false if it was already 0. */
static bool unfinished_sub(struct crew_queue *q, uint64_t n) {
    uint64_t v = atomic_load(&q->unfinished);
    uint64_t next;
    do {
        if (v == 0) return false;
        next = v > n ? v - n : 0;
    } while (!atomic_compare_exchange_weak(&q->unfinished, &v, next));
    if (next == 0) crew__queue_wake_joiners(q);
    return true;
}

/* ------------------------------------------------------------------ put/get */

int crew_queue_put(crew_queue *queue, const void *item, double timeout) {
    if (!valid(queue) || item == NULL) return CREW_EINVAL;
    crew__deadline d;
    int rc = crew__deadline_init(&d, timeout);
    if (rc != 0) return rc;
    if (atomic_load(&queue->shutdown) != CREW__OPEN) return CREW_ESHUTDOWN;
    /* Counted before the item can be seen: join never returns early. */
    atomic_fetch_add(&queue->unfinished, 1);
    rc = queue->kind == CREW_FIFO ? crew__ring_put(queue, item, &d) : crew__locked_put(queue, item, &d);
    if (rc != 0) unfinished_sub(queue, 1);
    return rc;
}

int crew_queue_get(crew_queue *queue, void *item, double timeout) {
    if (!valid(queue) || item == NULL) return CREW_EINVAL;
    crew__deadline d;
    int rc = crew__deadline_init(&d, timeout);
    if (rc != 0) return rc;
    return queue->kind == CREW_FIFO ? crew__ring_get(queue, item, &d) : crew__locked_get(queue, item, &d);
}

/* ------------------------------------------------------------ snapshots */

static uint64_t size_of(const crew_queue *q) {
    return q->kind == CREW_FIFO ? crew__ring_size(q) : crew__locked_size(q);
}

int crew_queue_size(const crew_queue *queue) {
    if (!valid(queue)) return CREW_EINVAL;
    uint64_t n = size_of(queue);
    return n > INT_MAX ? INT_MAX : (int)n;
}

bool crew_queue_empty(const crew_queue *queue) { return valid(queue) && size_of(queue) == 0; }

bool crew_queue_full(const crew_queue *queue) { return valid(queue) && size_of(queue) >= queue->capacity; }

size_t crew_queue_item_size(const crew_queue *queue) { return valid(queue) ? queue->item_size : 0; }

size_t crew_queue_capacity(const crew_queue *queue) { return valid(queue) ? queue->capacity : 0; }

/* ---------------------------------------------------- tasks and shutdown */

int crew_queue_task_done(crew_queue *queue) {
    if (!valid(queue)) return CREW_EINVAL;
    return unfinished_sub(queue, 1) ? 0 : CREW_EOVERFLOW;
}

int crew_queue_join(crew_queue *queue, double timeout) {
    if (!valid(queue)) return CREW_EINVAL;
    crew__deadline d;
    int rc = crew__deadline_init(&d, timeout);
    if (rc != 0) return rc;
    struct crew_queue *q = queue;
    for (;;) {
        if (atomic_load(&q->unfinished) == 0) return 0;
        if (d.is_try || crew__deadline_passed(&d)) return CREW_ETIMEDOUT;
        uint32_t seen = atomic_load(&q->join_seq);
        atomic_fetch_add(&q->joiners, 1);
        if (atomic_load(&q->unfinished) != 0) {
            crew__deadline slice = crew__queue_slice(q, &d);
            crew__futex_wait(&q->join_seq, seen, &slice, crew__queue_shared(q));
        }
        atomic_fetch_sub(&q->joiners, 1);
    }
}

int crew_queue_shutdown(crew_queue *queue, bool immediate) {
    if (!valid(queue)) return CREW_EINVAL;
    struct crew_queue *q = queue;
    uint32_t want = immediate ? CREW__SHUTDOWN_NOW : CREW__SHUTDOWN;
    uint32_t cur = atomic_load(&q->shutdown);
    while (cur < want && !atomic_compare_exchange_weak(&q->shutdown, &cur, want)) {
    }
    if (immediate) {
        uint64_t n = q->kind == CREW_FIFO ? crew__ring_drain(q) : crew__locked_drain(q);
        if (n > 0) unfinished_sub(q, n);
        crew__queue_wake_joiners(q);
    }
    if (q->kind == CREW_FIFO) crew__ring_wake_all(q);
    else crew__locked_wake_all(q);
    return 0;
}
