/* crew_barrier, after CPython's threading.Barrier.
 *
 * All fields are written under `_mutex` (a small internal futex lock);
 * `_count` and `_state` are atomics only so that n_waiting and broken can
 * read a snapshot without the mutex (the action runs holding it). Threads
 * that must wait read `_seq` under the mutex, release it and sleep on `_seq`;
 * every state change bumps `_seq` and wakes all sleepers under the mutex, so
 * no change is missed.
 *
 * States: FILLING (threads arriving), DRAINING (the last one arrived; the
 * others are leaving with their index), RESETTING (reset() while threads
 * waited: they leave with CREW_EBROKEN), BROKEN (until reset). A new cycle
 * cannot start filling until the previous one has drained (`_count` back to
 * 0), so a fast thread re-entering the barrier never mixes with the slow
 * leavers of the last cycle.
 */
#include <string.h>

#include "sync_internal.h"

enum { FILLING = 0, DRAINING = 1, RESETTING = -1, BROKEN = -2 };

int crew_barrier_init(crew_barrier *barrier, unsigned parties, const crew_barrier_options *opts) {
    static const crew_barrier_options defaults = {0};
    if (opts == NULL) opts = &defaults;
    if (barrier == NULL || parties == 0 || parties > INT32_MAX || (opts->flags & ~CREW_SHARED) != 0)
        return CREW_EINVAL;
    memset(barrier, 0, sizeof *barrier);
    barrier->_parties = parties;
    barrier->_state = FILLING;
    barrier->_flags = opts->flags;
    barrier->_action = opts->action;
    barrier->_arg = opts->arg;
    atomic_store_explicit(&barrier->_magic, CREW__MAGIC_BARRIER, memory_order_release);
    return 0;
}

static bool shared_of(const crew_barrier *b) { return (b->_flags & CREW_SHARED) != 0; }

static void lock_b(crew_barrier *b) { crew__mutex_lock(&b->_mutex, shared_of(b)); }
static void unlock_b(crew_barrier *b) { crew__mutex_unlock(&b->_mutex, shared_of(b)); }

/* Wake everyone sleeping on the barrier. Called with the mutex held. */
static void notify_all_b(crew_barrier *b) {
    atomic_fetch_add_explicit(&b->_seq, 1, memory_order_relaxed);
    crew__futex_wake(&b->_seq, INT_MAX, shared_of(b));
}

/* Sleep until a state change or the deadline (NULL: none). Called and
 * returns with the mutex held. */
static int wait_b(crew_barrier *b, const crew__deadline *d) {
    uint32_t seq = atomic_load_explicit(&b->_seq, memory_order_relaxed);
    unlock_b(b);
    int rc = crew__futex_wait(&b->_seq, seq, d, shared_of(b));
    lock_b(b);
    return rc == -ETIMEDOUT ? CREW_ETIMEDOUT : 0;
}

static void break_b(crew_barrier *b) {
    b->_state = BROKEN;
    notify_all_b(b);
}

int crew_barrier_destroy(crew_barrier *barrier) {
    if (!CREW__VALID(barrier, CREW__MAGIC_BARRIER)) return CREW_EINVAL;
    lock_b(barrier);
    uint32_t count = barrier->_count;
    unlock_b(barrier);
    if (count != 0) return CREW_EBUSY;
    atomic_store_explicit(&barrier->_magic, CREW__MAGIC_DEAD, memory_order_relaxed);
    return 0;
}

int crew_barrier_wait(crew_barrier *barrier, double timeout) {
    if (!CREW__VALID(barrier, CREW__MAGIC_BARRIER)) return CREW_EINVAL;
    crew__deadline d;
    int rc = crew__deadline_init(&d, timeout);
    if (rc != 0) return rc;
    crew_barrier *b = barrier;
    lock_b(b);
    /* Wait out the previous cycle's draining or resetting. */
    while (b->_state == DRAINING || b->_state == RESETTING) wait_b(b, NULL);
    if (b->_state == BROKEN) {
        unlock_b(b);
        return CREW_EBROKEN;
    }
    int index = (int)b->_count++;
    int result = index;
    if ((uint32_t)index + 1 == b->_parties) {
        int arc = b->_action ? b->_action(b->_arg) : 0;
        if (arc != 0) {
            result = arc < 0 ? arc : CREW_EBROKEN;
            break_b(b);
        } else {
            b->_state = DRAINING;
            notify_all_b(b);
        }
    } else {
        while (b->_state == FILLING) {
            if (wait_b(b, &d) == CREW_ETIMEDOUT && b->_state == FILLING) {
                break_b(b);
                result = CREW_ETIMEDOUT;
                break;
            }
        }
        if (result >= 0 && b->_state < 0) result = CREW_EBROKEN;
    }
    /* Leave; the last one out of a drained or reset cycle reopens it. */
    if (--b->_count == 0 && (b->_state == DRAINING || b->_state == RESETTING)) {
        b->_state = FILLING;
        notify_all_b(b);
    }
    unlock_b(b);
    return result;
}

int crew_barrier_reset(crew_barrier *barrier) {
    if (!CREW__VALID(barrier, CREW__MAGIC_BARRIER)) return CREW_EINVAL;
    lock_b(barrier);
    if (barrier->_count > 0) {
        if (barrier->_state == FILLING || barrier->_state == BROKEN) barrier->_state = RESETTING;
    } else {
        barrier->_state = FILLING;
    }
    notify_all_b(barrier);
    unlock_b(barrier);
    return 0;
}

int crew_barrier_abort(crew_barrier *barrier) {
    if (!CREW__VALID(barrier, CREW__MAGIC_BARRIER)) return CREW_EINVAL;
    lock_b(barrier);
    break_b(barrier);
    unlock_b(barrier);
    return 0;
}

int crew_barrier_parties(const crew_barrier *barrier) {
    if (!CREW__VALID(barrier, CREW__MAGIC_BARRIER)) return CREW_EINVAL;
    return (int)barrier->_parties;
}

int crew_barrier_n_waiting(crew_barrier *barrier) {
    if (!CREW__VALID(barrier, CREW__MAGIC_BARRIER)) return CREW_EINVAL;
    int32_t state = atomic_load(&barrier->_state);
    return state == FILLING ? (int)atomic_load(&barrier->_count) : 0;
}

bool crew_barrier_broken(crew_barrier *barrier) {
    return CREW__VALID(barrier, CREW__MAGIC_BARRIER) && atomic_load(&barrier->_state) == BROKEN;
}
