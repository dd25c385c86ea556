/* The FIFO kind of crew_queue: a bounded lock-free ring (after Dmitry
 * Vyukov's MPMC queue), made safe against processes that die in the middle
 * of an operation.
 *
 * Tickets. The n-th put takes ticket n from `tail`, the n-th get ticket n
 * from `head`; ticket t lives in slot t % capacity. Each slot starts with a
 * 64-bit word `seq` that says where the slot is in its life:
 *     2t           empty, waiting for the put of ticket t
 *     claim(2t)    that put is writing the item (producer claim)
 *     2t+1         full, waiting for the get of ticket t
 *     2t+1 | SKIP  the put of ticket t died while writing: nothing to get
 *     claim(2t+1)  that get is copying the item out (consumer claim)
 *     2(t+cap)     empty again, for the next lap
 * A claim word holds CLAIM, CONSUMER for gets, the low 29 bits of the
 * sequence number it replaced, and the claiming process's pid.
 *
 * A put at ticket t (read from `tail`) claims the slot by CAS from 2t to
 * claim(2t), then moves `tail` on by CAS (anyone who finds ticket t taken
 * helps move it), copies the item and publishes 2t+1 (release). A get is the
 * mirror image at `head`, ending with 2(t+cap). A CAS on the slot word is the
 * only way to own a slot, so no two parties ever write the same item.
 *
 * A process that dies holding a claim leaves its pid in the slot. Whoever is
 * then blocked by that slot (a get waiting for ticket t, a put waiting for
 * the slot's previous lap) checks, before it sleeps, whether the pid is
 * alive; if not it finishes the dead party's step for it: a dead put's slot
 * becomes 2t+1|SKIP (the item never existed), a dead get's slot becomes
 * 2(t+cap) (the item went with it), and `tail`/`head` are moved past the
 * ticket. So survivors never hang on a dead process and never see half an
 * item. (A pid reused by a new process within that moment would look alive:
 * the slot then waits until the new process ends.)
 *
 * Sleeping. A get that finds its ticket empty reads `items_seq`, announces
 * itself in `getters`, looks once more and sleeps on `items_seq`; a put
 * that published an item issues a seq_cst fence and, only if `getters` is
 * nonzero, bumps `items_seq` and wakes one (a Dekker pair: either the put
 * sees the sleeper or the sleeper sees the item). Puts on a full ring sleep
 * on `space_seq` the same way. Shared sleepers wake every slice to look for
 * dead claimers.
 */
#include <limits.h>
#include <signal.h>
#include <string.h>

#include "futex.h"
#include "queue_internal.h"
#include "tid.h"

#define CLAIM ((uint64_t)1 << 63)
#define CONSUMER ((uint64_t)1 << 62)
#define SKIP ((uint64_t)1 << 61)
#define LOW29 ((uint64_t)0x1fffffff)

enum { DONE, EMPTY, FULL = EMPTY, BLOCKED };

/* Before sleeping, look again RING_SPINS times, RING_SPIN_PAUSES pauses
 * apart (some tens of microseconds in all). */
#ifndef RING_SPINS
#define RING_SPINS 200
#endif
#ifndef RING_SPIN_PAUSES
#define RING_SPIN_PAUSES 16
#endif

static _Atomic uint64_t *seq_of(struct crew_queue *q, uint64_t ticket) {
    return (_Atomic uint64_t *)(void *)crew__queue_slot(q, ticket % q->capacity);
}

static unsigned char *item_of(struct crew_queue *q, uint64_t ticket) {
    return crew__queue_slot(q, ticket % q->capacity) + sizeof(uint64_t);
}

static uint64_t claim_word(uint64_t seqnum, bool consumer) {
    return CLAIM | (consumer ? CONSUMER : 0) | (seqnum & LOW29) << 32 | (uint32_t)crew__pid();
}

/* Is s a claim of the given kind on sequence number seqnum? */
static bool is_claim_of(uint64_t s, uint64_t seqnum, bool consumer) {
    return (s & CLAIM) && ((s & CONSUMER) != 0) == consumer && ((s >> 32) & LOW29) == (seqnum & LOW29);
}

static int32_t claim_pid(uint64_t s) { return (int32_t)(uint32_t)s; }

/* Has the process that made this claim ended? */
static bool claimer_dead(const struct crew_queue *q, uint64_t s) {
    if (!crew__queue_shared(q)) return false; /* claims of this process only */
    int32_t pid = claim_pid(s);
    if (pid == crew__pid()) return false;
    return kill(pid, 0) != 0 && errno == ESRCH;
}

static void advance(_Atomic uint64_t *counter, uint64_t from) {
    atomic_compare_exchange_strong(counter, &from, from + 1);
}

/* --------------------------------------------------------- one attempt */

/* Put once. DONE; FULL; BLOCKED with *blocker = the claim word in the way
 * and *ticket the ticket it belongs to. */
static int try_put(struct crew_queue *q, const void *item, uint64_t *blocker, uint64_t *ticket) {
    for (;;) {
        uint64_t t = atomic_load_explicit(&q->tail, memory_order_acquire);
        _Atomic uint64_t *seqp = seq_of(q, t);
        uint64_t s = atomic_load_explicit(seqp, memory_order_acquire);
        if (s == 2 * t) {
            if (!atomic_compare_exchange_strong_explicit(seqp, &s, claim_word(2 * t, false), memory_order_acquire,
                                                         memory_order_relaxed))
                continue;
            advance(&q->tail, t);
            memcpy(item_of(q, t), item, q->item_size);
            atomic_store_explicit(seqp, 2 * t + 1, memory_order_release);
            return DONE;
        }
        /* Ticket t already taken (claimed, published, skipped, being read):
         * help `tail` past it. */
        if (is_claim_of(s, 2 * t, false) || (s & ~SKIP) == 2 * t + 1 || is_claim_of(s, 2 * t + 1, true) ||
            s == 2 * (t + q->capacity)) {
            advance(&q->tail, t);
            continue;
        }
        if (atomic_load_explicit(&q->tail, memory_order_acquire) != t) continue; /* stale look */
        /* The slot still holds the previous lap's ticket: full. */
        if (s & CLAIM) {
            *blocker = s;
            *ticket = t - q->capacity;
            return BLOCKED;
        }
        return FULL;
    }
}

/* Get once (item NULL: discard). DONE; EMPTY; BLOCKED as try_put. */
static int try_get(struct crew_queue *q, void *item, uint64_t *blocker, uint64_t *ticket) {
    for (;;) {
        uint64_t t = atomic_load_explicit(&q->head, memory_order_acquire);
        _Atomic uint64_t *seqp = seq_of(q, t);
        uint64_t s = atomic_load_explicit(seqp, memory_order_acquire);
        if (s == 2 * t + 1) {
            if (!atomic_compare_exchange_strong_explicit(seqp, &s, claim_word(2 * t + 1, true), memory_order_acquire,
                                                         memory_order_relaxed))
                continue;
            advance(&q->head, t);
            if (item) memcpy(item, item_of(q, t), q->item_size);
            atomic_store_explicit(seqp, 2 * (t + q->capacity), memory_order_release);
            return DONE;
        }
        if (s == ((2 * t + 1) | SKIP)) { /* its put died: recycle the slot */
            if (atomic_compare_exchange_strong(seqp, &s, 2 * (t + q->capacity))) advance(&q->head, t);
            continue;
        }
        /* Ticket t already taken by another get: help `head` past it. */
        if (is_claim_of(s, 2 * t + 1, true) || s == 2 * (t + q->capacity)) {
            advance(&q->head, t);
            continue;
        }
        if (atomic_load_explicit(&q->head, memory_order_acquire) != t) continue; /* stale look */
        if (is_claim_of(s, 2 * t, false)) { /* its put is still writing */
            *blocker = s;
            *ticket = t;
            return BLOCKED;
        }
        return EMPTY;
    }
}

/* Finish a dead claimer's step (see the top of the file). */
static void recover(struct crew_queue *q, uint64_t s, uint64_t ticket) {
    _Atomic uint64_t *seqp = seq_of(q, ticket);
    if (s & CONSUMER) {
        if (atomic_compare_exchange_strong(seqp, &s, 2 * (ticket + q->capacity))) advance(&q->head, ticket);
    } else {
        if (atomic_compare_exchange_strong(seqp, &s, (2 * ticket + 1) | SKIP)) advance(&q->tail, ticket);
    }
}

/* ------------------------------------------------------------- waking */

static void wake_one(struct crew_queue *q, _Atomic uint32_t *waiting, _Atomic uint32_t *seq) {
    atomic_thread_fence(memory_order_seq_cst); /* pairs with the sleeper's announce */
    if (atomic_load_explicit(waiting, memory_order_relaxed) != 0) {
        atomic_fetch_add(seq, 1);
        crew__futex_wake(seq, 1, crew__queue_shared(q));
    }
}

void crew__ring_wake_all(struct crew_queue *q) {
    bool shared = crew__queue_shared(q);
    atomic_fetch_add(&q->items_seq, 1);
    crew__futex_wake(&q->items_seq, INT_MAX, shared);
    atomic_fetch_add(&q->space_seq, 1);
    crew__futex_wake(&q->space_seq, INT_MAX, shared);
}

/* ------------------------------------------------------------ blocking */

typedef int (*attempt_fn)(struct crew_queue *q, void *item, uint64_t *blocker, uint64_t *ticket);

static int try_put_any(struct crew_queue *q, void *item, uint64_t *blocker, uint64_t *ticket) {
    return try_put(q, item, blocker, ticket);
}

/* The one blocking loop for both directions. `waiting`/`seq` are the
 * sleepers' count and futex of this side. Returns 0, or `busy_rc` (0
 * timeout), CREW_ETIMEDOUT, CREW_ESHUTDOWN. */
static int wait_loop(struct crew_queue *q, void *item, const crew__deadline *d, attempt_fn attempt, bool is_get,
                     _Atomic uint32_t *waiting, _Atomic uint32_t *seq) {
    int spins = crew__smp() ? RING_SPINS : 0;
    int busy_rc = is_get ? CREW_EEMPTY : CREW_EFULL;
    for (;;) {
        uint64_t blocker = 0, ticket = 0;
        int r = attempt(q, item, &blocker, &ticket);
        if (r == DONE) return 0;
        if (r == BLOCKED && claimer_dead(q, blocker)) {
            recover(q, blocker, ticket);
            continue;
        }
        /* Shut down: a put stops at once; a get only once the queue is empty,
         * which it just found. */
        if (atomic_load(&q->shutdown) != CREW__OPEN) return CREW_ESHUTDOWN;
        if (d->is_try) return busy_rc;
        if (spins > 0) {
            /* Look again only after a pause: a looker keeps pulling the slot's
             * cache line from the other side, and letting it run ahead a
             * little means each line moves once for several items. */
            spins--;
            for (int i = 0; i < RING_SPIN_PAUSES; i++) crew__cpu_relax();
            continue;
        }
        if (crew__deadline_passed(d)) return CREW_ETIMEDOUT;
        uint32_t seen = atomic_load(seq);
        atomic_fetch_add(waiting, 1);
        r = attempt(q, item, &blocker, &ticket);
        if (r != DONE && atomic_load(&q->shutdown) == CREW__OPEN) {
            crew__deadline slice = crew__queue_slice(q, d);
            crew__futex_wait(seq, seen, &slice, crew__queue_shared(q));
        }
        atomic_fetch_sub(waiting, 1);
        if (r == DONE) return 0;
    }
}

int crew__ring_put(struct crew_queue *q, const void *item, const crew__deadline *d) {
    int rc = wait_loop(q, (void *)item, d, try_put_any, false, &q->putters, &q->space_seq);
    if (rc == 0) wake_one(q, &q->getters, &q->items_seq);
    return rc;
}

int crew__ring_get(struct crew_queue *q, void *item, const crew__deadline *d) {
    int rc = wait_loop(q, item, d, try_get, true, &q->getters, &q->items_seq);
    if (rc == 0) wake_one(q, &q->putters, &q->space_seq);
    return rc;
}

/* ------------------------------------------------------------- the rest */

void crew__ring_init(struct crew_queue *q) {
    for (uint64_t i = 0; i < q->capacity; i++) atomic_init(seq_of(q, i), 2 * i);
}

uint64_t crew__ring_size(const struct crew_queue *q) {
    uint64_t h = atomic_load(&((struct crew_queue *)q)->head);
    uint64_t t = atomic_load(&((struct crew_queue *)q)->tail);
    if (t <= h) return 0;
    return t - h > q->capacity ? q->capacity : t - h;
}

uint64_t crew__ring_drain(struct crew_queue *q) {
    uint64_t n = 0, blocker, ticket;
    for (;;) {
        int r = try_get(q, NULL, &blocker, &ticket);
        if (r == DONE) {
            n++;
        } else if (r == BLOCKED && claimer_dead(q, blocker)) {
            recover(q, blocker, ticket);
        } else {
            return n;
        }
    }
}
