/* crew_queue.
 *
 * One struct in one block of memory: the header below, then the slots (and,
 * for a priority queue, its heap of slot numbers, its stack of free slots and
 * a live flag per slot). Everything is found by offset from the header, so
 * the block works wherever a process maps it.
 *
 * Concurrency: every field after `lock` is read and written only with `lock`
 * held, except `state`, which is also read without it for size()/empty()/
 * full() snapshots (hence atomic). Three conditions over `lock`, as in
 * CPython's queue.Queue: not_empty (getters wait), not_full (putters wait),
 * all_done (join waits). A put notifies one getter, a get one putter; a
 * task_done that reaches zero and a shutdown notify everyone.
 *
 * (Signal fences order these plain stores for the compiler; a process that
 * dies has issued its stores in program order, and the survivor takes the
 * robust lock, which orders its reads after them.)
 *
 * Crash safety (shared queues): `lock` is robust, so a process that dies
 * holding it hands it to the next acquirer with CREW_EOWNERDEAD, which then
 * runs repair(). Every operation commits with one store: for FIFO and LIFO
 * the 64-bit `state` word (first slot | count << 32), written after the item
 * is copied in or out; for PRIORITY the slot's live flag, after which the
 * heap, the free stack and the count are bookkeeping that repair() rebuilds
 * from the live flags whenever `dirty` shows an update was cut short. So an
 * operation that died is either wholly done or not at all.
 */
#include "crew/queue.h"

#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "crew/shm.h"
#include "crew/sync.h"
#include "sync/sync_internal.h"

#define QUEUE_MAGIC 0x51574552u /* "REWQ" */
#define QUEUE_DEAD 0xdeadbeefu
#define DEFAULT_CAPACITY 1024
#define MAX_CAPACITY ((size_t)UINT32_MAX - 1)

enum origin { FROM_MALLOC, FROM_ARENA, FROM_CALLER };
enum shutdown { OPEN = 0, SHUTDOWN = 1, SHUTDOWN_NOW = 2 };

struct crew_queue {
    _Atomic uint32_t magic;
    uint32_t kind;
    uint32_t flags;
    uint32_t origin;
    uint64_t item_size;
    uint64_t capacity;
    uint64_t slot_size;          /* stride: [seq (priority)] item */
    uint64_t slots_off;          /* offsets from the header */
    uint64_t heap_off;           /* priority: uint32 slot numbers, a min-heap */
    uint64_t free_off;           /* priority: uint32 stack of free slots */
    uint64_t live_off;           /* priority: uint8 per slot, 1 = holds an item */
    crew_queue_compare compare;  /* priority; NULL = int64 key */

    crew_lock lock;
    crew_cond not_empty;         /* the three conditions are over `lock` */
    crew_cond not_full;
    crew_cond all_done;

    _Atomic uint64_t state;      /* first slot (FIFO) | count << 32 */
    uint64_t next_seq;           /* priority: insertion order, for stability */
    uint32_t free_top;           /* priority: entries in the free stack */
    uint32_t dirty;              /* priority: bookkeeping being updated */
    uint64_t unfinished;         /* items put and not yet task_done */
    uint32_t shutdown;           /* enum shutdown */
};

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
    if (cap > MAX_CAPACITY) return 0;
    bool prio = opts->kind == CREW_PRIORITY;
    size_t slot = round_up(opts->item_size + (prio ? sizeof(uint64_t) : 0), 8);
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

static unsigned char *slot_at(struct crew_queue *q, uint64_t i) {
    return (unsigned char *)q + q->slots_off + i * q->slot_size;
}
static uint32_t *heap_of(struct crew_queue *q) { return (uint32_t *)((char *)q + q->heap_off); }
static uint32_t *free_of(struct crew_queue *q) { return (uint32_t *)((char *)q + q->free_off); }
static uint8_t *live_of(struct crew_queue *q) { return (uint8_t *)q + q->live_off; }

static uint64_t count_of(uint64_t state) { return state >> 32; }
static uint64_t first_of(uint64_t state) { return state & 0xffffffffu; }
static uint64_t make_state(uint64_t first, uint64_t count) { return first | count << 32; }

static uint64_t load_state(const struct crew_queue *q) {
    return atomic_load_explicit(&((struct crew_queue *)q)->state, memory_order_relaxed);
}
static void commit_state(struct crew_queue *q, uint64_t s) {
    atomic_store_explicit(&q->state, s, memory_order_relaxed);
}

/* -------------------------------------------------------- priority heap */

/* Does slot a come before slot b? By the caller's order, then put order. */
static bool before(struct crew_queue *q, uint32_t a, uint32_t b) {
    unsigned char *sa = slot_at(q, a), *sb = slot_at(q, b);
    const void *ia = sa + sizeof(uint64_t), *ib = sb + sizeof(uint64_t);
    int c;
    if (q->compare) {
        c = q->compare(ia, ib);
    } else {
        int64_t ka, kb;
        memcpy(&ka, ia, sizeof ka);
        memcpy(&kb, ib, sizeof kb);
        c = (ka > kb) - (ka < kb);
    }
    if (c != 0) return c < 0;
    uint64_t qa, qb;
    memcpy(&qa, sa, sizeof qa);
    memcpy(&qb, sb, sizeof qb);
    return qa < qb;
}

static void sift_up(struct crew_queue *q, uint32_t *heap, uint64_t i) {
    uint32_t v = heap[i];
    while (i > 0) {
        uint64_t parent = (i - 1) / 2;
        if (!before(q, v, heap[parent])) break;
        heap[i] = heap[parent];
        i = parent;
    }
    heap[i] = v;
}

static void sift_down(struct crew_queue *q, uint32_t *heap, uint64_t n, uint64_t i) {
    uint32_t v = heap[i];
    for (;;) {
        uint64_t child = 2 * i + 1;
        if (child >= n) break;
        if (child + 1 < n && before(q, heap[child + 1], heap[child])) child++;
        if (!before(q, heap[child], v)) break;
        heap[i] = heap[child];
        i = child;
    }
    heap[i] = v;
}

/* Rebuild heap, free stack and count from the live flags. */
static void rebuild_priority(struct crew_queue *q) {
    uint32_t *heap = heap_of(q), *fr = free_of(q);
    uint8_t *live = live_of(q);
    uint64_t n = 0, nfree = 0;
    for (uint64_t i = 0; i < q->capacity; i++) {
        if (live[i]) heap[n++] = (uint32_t)i;
        else fr[nfree++] = (uint32_t)i;
    }
    for (uint64_t i = n / 2; i-- > 0;) sift_down(q, heap, n, i);
    q->free_top = (uint32_t)nfree;
    commit_state(q, make_state(0, n));
    q->dirty = 0;
}

/* -------------------------------------------------------------- locking */

/* A process died holding the lock: bring the bookkeeping back in line with
 * what was committed. */
static void repair(struct crew_queue *q) {
    if (q->kind == CREW_PRIORITY && q->dirty) rebuild_priority(q);
    /* The dead process may have changed the queue without notifying. */
    crew_cond_notify_all(&q->not_empty);
    crew_cond_notify_all(&q->not_full);
    crew_cond_notify_all(&q->all_done);
}

static void q_lock(struct crew_queue *q) {
    if (crew_lock_acquire(&q->lock, CREW_FOREVER) == CREW_EOWNERDEAD) repair(q);
}

static void q_unlock(struct crew_queue *q) { crew__lock_release_held(&q->lock); }

/* Before sleeping on an empty (or full) queue, watch it for a moment with the
 * lock released: in a steady stream the other side usually fills (or
 * drains) it within microseconds, and a futex sleep plus the wake-up it
 * needs costs more than that. `state` is read without the lock here, as a
 * hint only; the caller re-checks under the lock. */
#define QUEUE_SPIN 2000
#define SHARED_WAIT_SLICE_NS 100000000 /* 0.1 s */

static void spin_until_count(struct crew_queue *q, bool want_items) {
    if (!crew__smp()) return;
    q_unlock(q);
    for (int i = 0; i < QUEUE_SPIN; i++) {
        uint64_t n = count_of(load_state(q));
        if (want_items ? n > 0 : n < q->capacity) break;
        crew__cpu_relax();
    }
    q_lock(q);
}

/* Wait on cond until notified or the deadline; the lock is held before and
 * after. CREW_ETIMEDOUT or 0. */
static int q_wait(struct crew_queue *q, crew_cond *cond, const crew__deadline *d) {
    crew__deadline slice = *d;
    if (q->flags & CREW_SHARED) {
        /* A process that dies after changing the queue, before it notified,
         * leaves sleepers that nobody wakes: sleep in slices and look again. */
        int64_t end = crew__now_ns() + SHARED_WAIT_SLICE_NS;
        if (end < slice.ns) slice.ns = end;
    }
    int rc = crew__cond_wait_dl(cond, &slice);
    if (rc == CREW_ETIMEDOUT && slice.ns != d->ns) rc = 0; /* only a slice ended */
    if (rc == CREW_EOWNERDEAD) {
        repair(q);
        rc = 0;
    }
    return rc;
}

/* ------------------------------------------------------------ create */

static int build(struct crew_queue *q, size_t size, const crew_queue_options *opts, enum origin origin) {
    size_t need = crew_queue_footprint(opts);
    if (need == 0 || size < need) return CREW_EINVAL; /* before touching the memory */
    memset(q, 0, sizeof *q);
    layout(opts, q);
    q->origin = origin;
    int rc = crew_lock_init(&q->lock, opts->flags);
    if (rc != 0) return rc;
    crew_cond_init(&q->not_empty, &q->lock, opts->flags);
    crew_cond_init(&q->not_full, &q->lock, opts->flags);
    crew_cond_init(&q->all_done, &q->lock, opts->flags);
    if (q->kind == CREW_PRIORITY) {
        memset(live_of(q), 0, q->capacity);
        rebuild_priority(q);
    }
    atomic_store_explicit(&q->magic, QUEUE_MAGIC, memory_order_release);
    return 0;
}

size_t crew_queue_footprint(const crew_queue_options *opts) {
    struct crew_queue scratch;
    return layout(opts, &scratch);
}

int crew_queue_create(crew_queue **out, const crew_queue_options *opts) {
    if (out == NULL) return CREW_EINVAL;
    size_t size = crew_queue_footprint(opts);
    if (size == 0) return CREW_EINVAL;
    bool shared = (opts->flags & CREW_SHARED) != 0;
    void *mem = shared ? crew_shm_alloc(size) : aligned_alloc(64, round_up(size, 64));
    if (mem == NULL) return CREW_ENOMEM;
    int rc = build(mem, size, opts, shared ? FROM_ARENA : FROM_MALLOC);
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
    int rc = build(mem, size, opts, FROM_CALLER);
    if (rc == 0) *out = mem;
    return rc;
}

static bool valid(const crew_queue *q) {
    return q != NULL && atomic_load_explicit(&((crew_queue *)q)->magic, memory_order_acquire) == QUEUE_MAGIC;
}

int crew_queue_attach(crew_queue **out, void *mem) {
    if (out == NULL || !valid(mem) || !(((crew_queue *)mem)->flags & CREW_SHARED)) return CREW_EINVAL;
    *out = mem;
    return 0;
}

/* The caller promises no thread or process uses the queue any more. (Waiter
 * counts cannot prove that: a process that died blocked in the queue stays
 * counted forever.) */
static void teardown(struct crew_queue *q) {
    crew_cond_destroy(&q->not_empty);
    crew_cond_destroy(&q->not_full);
    crew_cond_destroy(&q->all_done);
    crew_lock_destroy(&q->lock);
    atomic_store_explicit(&q->magic, QUEUE_DEAD, memory_order_relaxed);
}

void crew_queue_free(crew_queue *queue) {
    if (!valid(queue) || queue->origin == FROM_CALLER) return;
    enum origin origin = queue->origin;
    teardown(queue);
    if (origin == FROM_ARENA) crew_shm_free(queue);
    else free(queue);
}

int crew_queue_destroy(crew_queue *queue) {
    if (!valid(queue) || queue->origin != FROM_CALLER) return CREW_EINVAL;
    teardown(queue);
    return 0;
}

/* ----------------------------------------------------- insert / remove */

static void insert(struct crew_queue *q, const void *item) {
    uint64_t s = load_state(q), n = count_of(s);
    if (q->kind == CREW_PRIORITY) {
        q->dirty = 1;
        atomic_signal_fence(memory_order_seq_cst); /* dirty before any change */
        uint32_t slot = free_of(q)[--q->free_top];
        unsigned char *p = slot_at(q, slot);
        memcpy(p, &q->next_seq, sizeof q->next_seq);
        q->next_seq++;
        memcpy(p + sizeof(uint64_t), item, q->item_size);
        atomic_signal_fence(memory_order_seq_cst);
        live_of(q)[slot] = 1; /* commit */
        uint32_t *heap = heap_of(q);
        heap[n] = slot;
        sift_up(q, heap, n);
        commit_state(q, make_state(0, n + 1));
        atomic_signal_fence(memory_order_seq_cst); /* clean only after all of it */
        q->dirty = 0;
        return;
    }
    uint64_t first = first_of(s);
    uint64_t pos = q->kind == CREW_FIFO ? (first + n) % q->capacity : n;
    memcpy(slot_at(q, pos), item, q->item_size);
    commit_state(q, make_state(first, n + 1)); /* commit */
}

static void take(struct crew_queue *q, void *item) {
    uint64_t s = load_state(q), n = count_of(s);
    if (q->kind == CREW_PRIORITY) {
        uint32_t *heap = heap_of(q);
        uint32_t slot = heap[0];
        if (item) memcpy(item, slot_at(q, slot) + sizeof(uint64_t), q->item_size);
        q->dirty = 1;
        atomic_signal_fence(memory_order_seq_cst);
        live_of(q)[slot] = 0; /* commit */
        heap[0] = heap[n - 1];
        if (n > 1) sift_down(q, heap, n - 1, 0);
        free_of(q)[q->free_top++] = slot;
        commit_state(q, make_state(0, n - 1));
        atomic_signal_fence(memory_order_seq_cst); /* clean only after all of it */
        q->dirty = 0;
        return;
    }
    uint64_t first = first_of(s);
    if (q->kind == CREW_FIFO) {
        if (item) memcpy(item, slot_at(q, first), q->item_size);
        commit_state(q, make_state((first + 1) % q->capacity, n - 1)); /* commit */
    } else {
        if (item) memcpy(item, slot_at(q, n - 1), q->item_size);
        commit_state(q, make_state(0, n - 1)); /* commit */
    }
}

/* -------------------------------------------------------------- put/get */

int crew_queue_put(crew_queue *queue, const void *item, double timeout) {
    if (!valid(queue) || item == NULL) return CREW_EINVAL;
    crew__deadline d;
    int rc = crew__deadline_init(&d, timeout);
    if (rc != 0) return rc;
    struct crew_queue *q = queue;
    bool spun = false;
    q_lock(q);
    for (;;) {
        if (q->shutdown != OPEN) {
            rc = CREW_ESHUTDOWN;
            break;
        }
        if (count_of(load_state(q)) < q->capacity) {
            /* Counted before the insert commits: a producer that dies in
             * between leaves join waiting (for its timeout), never returning
             * early. */
            q->unfinished++;
            insert(q, item);
            crew_cond_notify(&q->not_empty, 1);
            rc = 0;
            break;
        }
        if (d.is_try) {
            rc = CREW_EFULL;
            break;
        }
        if (!spun) {
            spun = true;
            spin_until_count(q, false);
            continue;
        }
        if (q_wait(q, &q->not_full, &d) == CREW_ETIMEDOUT && count_of(load_state(q)) >= q->capacity &&
            q->shutdown == OPEN) {
            rc = CREW_ETIMEDOUT;
            break;
        }
    }
    q_unlock(q);
    return rc;
}

int crew_queue_get(crew_queue *queue, void *item, double timeout) {
    if (!valid(queue) || item == NULL) return CREW_EINVAL;
    crew__deadline d;
    int rc = crew__deadline_init(&d, timeout);
    if (rc != 0) return rc;
    struct crew_queue *q = queue;
    bool spun = false;
    q_lock(q);
    for (;;) {
        if (count_of(load_state(q)) > 0) {
            take(q, item);
            crew_cond_notify(&q->not_full, 1);
            rc = 0;
            break;
        }
        if (q->shutdown != OPEN) {
            rc = CREW_ESHUTDOWN;
            break;
        }
        if (d.is_try) {
            rc = CREW_EEMPTY;
            break;
        }
        if (!spun) {
            spun = true;
            spin_until_count(q, true);
            continue;
        }
        if (q_wait(q, &q->not_empty, &d) == CREW_ETIMEDOUT && count_of(load_state(q)) == 0 &&
            q->shutdown == OPEN) {
            rc = CREW_ETIMEDOUT;
            break;
        }
    }
    q_unlock(q);
    return rc;
}

/* ------------------------------------------------------------ snapshots */

int crew_queue_size(const crew_queue *queue) {
    if (!valid(queue)) return CREW_EINVAL;
    uint64_t n = count_of(load_state(queue));
    return n > INT_MAX ? INT_MAX : (int)n;
}

bool crew_queue_empty(const crew_queue *queue) { return valid(queue) && count_of(load_state(queue)) == 0; }

bool crew_queue_full(const crew_queue *queue) {
    return valid(queue) && count_of(load_state(queue)) >= queue->capacity;
}

size_t crew_queue_item_size(const crew_queue *queue) { return valid(queue) ? queue->item_size : 0; }

size_t crew_queue_capacity(const crew_queue *queue) { return valid(queue) ? queue->capacity : 0; }

/* ---------------------------------------------------- tasks and shutdown */

int crew_queue_task_done(crew_queue *queue) {
    if (!valid(queue)) return CREW_EINVAL;
    struct crew_queue *q = queue;
    q_lock(q);
    int rc = 0;
    if (q->unfinished == 0) {
        rc = CREW_EOVERFLOW;
    } else if (--q->unfinished == 0) {
        crew_cond_notify_all(&q->all_done);
    }
    q_unlock(q);
    return rc;
}

int crew_queue_join(crew_queue *queue, double timeout) {
    if (!valid(queue)) return CREW_EINVAL;
    crew__deadline d;
    int rc = crew__deadline_init(&d, timeout);
    if (rc != 0) return rc;
    struct crew_queue *q = queue;
    q_lock(q);
    while (q->unfinished > 0) {
        if (d.is_try || (q_wait(q, &q->all_done, &d) == CREW_ETIMEDOUT && q->unfinished > 0)) {
            rc = CREW_ETIMEDOUT;
            break;
        }
    }
    q_unlock(q);
    return rc;
}

int crew_queue_shutdown(crew_queue *queue, bool immediate) {
    if (!valid(queue)) return CREW_EINVAL;
    struct crew_queue *q = queue;
    q_lock(q);
    if (q->shutdown != SHUTDOWN_NOW) q->shutdown = immediate ? SHUTDOWN_NOW : SHUTDOWN;
    if (immediate) {
        while (count_of(load_state(q)) > 0) {
            take(q, NULL);
            if (q->unfinished > 0) q->unfinished--;
        }
        crew_cond_notify_all(&q->all_done);
    }
    crew_cond_notify_all(&q->not_empty);
    crew_cond_notify_all(&q->not_full);
    q_unlock(q);
    return 0;
}
