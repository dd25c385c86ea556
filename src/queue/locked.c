/* The LIFO and PRIORITY kinds of crew_queue: a robust lock and two
 * conditions over it, as in CPython's queue.Queue (not_empty: getters wait;
 * not_full: putters wait). A put notifies one getter, a get one putter,
 * shutdown everyone.
 *
 * Crash safety (shared queues): `lock` is robust, so a process that dies
 * holding it hands it to the next acquirer with CREW_EOWNERDEAD, which then
 * runs repair(). Every operation commits with one store: for LIFO the 64-bit
 * `state` word (count << 32), written after the item is copied in or out;
 * for PRIORITY the slot's live flag, after which the heap, the free stack and
 * the count are bookkeeping that repair() rebuilds from the live flags
 * whenever `dirty` shows an update was cut short. So an operation that died
 * is either wholly done or not at all. (Signal fences order these plain
 * stores for the compiler; a process that dies has issued its stores in
 * program order, and the survivor takes the robust lock, which orders its
 * reads after them.) Sleepers of a shared queue wake every slice to look
 * again, in case the dead process changed the queue without notifying.
 */
#include <limits.h>
#include <string.h>

#include "queue_internal.h"
#include "sync/sync_internal.h"

static unsigned char *slot_at(struct crew_queue *q, uint64_t i) { return crew__queue_slot(q, i); }
static uint32_t *heap_of(struct crew_queue *q) { return (uint32_t *)((char *)q + q->heap_off); }
static uint32_t *free_of(struct crew_queue *q) { return (uint32_t *)((char *)q + q->free_off); }
static uint8_t *live_of(struct crew_queue *q) { return (uint8_t *)q + q->live_off; }

static uint64_t count_of(uint64_t state) { return state >> 32; }
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
}

static void q_lock(struct crew_queue *q) {
    if (crew_lock_acquire(&q->lock, CREW_FOREVER) == CREW_EOWNERDEAD) repair(q);
}

static void q_unlock(struct crew_queue *q) { crew__lock_release_held(&q->lock); }

/* Watch the queue for a moment with the lock released before sleeping
 * (CREW__QUEUE_SPIN). `state` is read without the lock here, as a hint
 * only; the caller re-checks under the lock. */
static void spin_until_count(struct crew_queue *q, bool want_items) {
    if (!crew__smp()) return;
    q_unlock(q);
    for (int i = 0; i < CREW__QUEUE_SPIN; i++) {
        uint64_t n = count_of(load_state(q));
        if (want_items ? n > 0 : n < q->capacity) break;
        crew__cpu_relax();
    }
    q_lock(q);
}

/* Wait on cond until notified or the deadline; the lock is held before and
 * after. CREW_ETIMEDOUT or 0. */
static int q_wait(struct crew_queue *q, crew_cond *cond, const crew__deadline *d) {
    crew__deadline slice = crew__queue_slice(q, d);
    int rc = crew__cond_wait_dl(cond, &slice);
    if (rc == CREW_ETIMEDOUT && slice.ns != d->ns) rc = 0; /* only a slice ended */
    if (rc == CREW_EOWNERDEAD) {
        repair(q);
        rc = 0;
    }
    return rc;
}

void crew__locked_init(struct crew_queue *q) {
    if (q->kind == CREW_PRIORITY) {
        memset(live_of(q), 0, q->capacity);
        rebuild_priority(q);
    }
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
    memcpy(slot_at(q, n), item, q->item_size); /* LIFO */
    commit_state(q, make_state(0, n + 1));     /* commit */
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
    if (item) memcpy(item, slot_at(q, n - 1), q->item_size); /* LIFO */
    commit_state(q, make_state(0, n - 1));                    /* commit */
}

/* -------------------------------------------------------------- put/get */

int crew__locked_put(struct crew_queue *q, const void *item, const crew__deadline *d) {
    bool spun = false;
    int rc;
    q_lock(q);
    for (;;) {
        if (atomic_load(&q->shutdown) != CREW__OPEN) {
            rc = CREW_ESHUTDOWN;
            break;
        }
        if (count_of(load_state(q)) < q->capacity) {
            insert(q, item);
            crew_cond_notify(&q->not_empty, 1);
            rc = 0;
            break;
        }
        if (d->is_try) {
            rc = CREW_EFULL;
            break;
        }
        if (!spun) {
            spun = true;
            spin_until_count(q, false);
            continue;
        }
        if (q_wait(q, &q->not_full, d) == CREW_ETIMEDOUT && count_of(load_state(q)) >= q->capacity &&
            atomic_load(&q->shutdown) == CREW__OPEN) {
            rc = CREW_ETIMEDOUT;
            break;
        }
    }
    q_unlock(q);
    return rc;
}

int crew__locked_get(struct crew_queue *q, void *item, const crew__deadline *d) {
    bool spun = false;
    int rc;
    q_lock(q);
    for (;;) {
        if (count_of(load_state(q)) > 0) {
            take(q, item);
            crew_cond_notify(&q->not_full, 1);
            rc = 0;
            break;
        }
        if (atomic_load(&q->shutdown) != CREW__OPEN) {
            rc = CREW_ESHUTDOWN;
            break;
        }
        if (d->is_try) {
            rc = CREW_EEMPTY;
            break;
        }
        if (!spun) {
            spun = true;
            spin_until_count(q, true);
            continue;
        }
        if (q_wait(q, &q->not_empty, d) == CREW_ETIMEDOUT && count_of(load_state(q)) == 0 &&
            atomic_load(&q->shutdown) == CREW__OPEN) {
            rc = CREW_ETIMEDOUT;
            break;
        }
    }
    q_unlock(q);
    return rc;
}

uint64_t crew__locked_size(const struct crew_queue *q) { return count_of(load_state(q)); }

uint64_t crew__locked_drain(struct crew_queue *q) {
    q_lock(q);
    uint64_t n = 0;
    while (count_of(load_state(q)) > 0) {
        take(q, NULL);
        n++;
    }
    q_unlock(q);
    return n;
}

void crew__locked_wake_all(struct crew_queue *q) {
    q_lock(q);
    crew_cond_notify_all(&q->not_empty);
    crew_cond_notify_all(&q->not_full);
    q_unlock(q);
}
