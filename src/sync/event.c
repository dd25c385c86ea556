/* crew_event.
 *
 * `_flag` is the futex word: bit 0 is the flag, the bits above count the
 * set() calls that raised it (a generation). A waiter remembers the word it
 * saw with the flag down and returns as soon as the word's generation moves
 * on, even if clear() lowered the flag again before it ran: a thread waiting
 * when set() is called is released, as in CPython (gh-57711).
 *
 * Waiters announce themselves in `_waiters` before sleeping, and set() raises
 * the flag before reading `_waiters` (both seq_cst), so a wake is never
 * missed and an event nobody waits on costs no system call. */
#include <string.h>

#include "sync_internal.h"

#define FLAG 1u
#define GENERATION 2u

int crew_event_init(crew_event *event, unsigned flags) {
    if (event == NULL || (flags & ~CREW_SHARED) != 0) return CREW_EINVAL;
    memset(event, 0, sizeof *event);
    event->_flags = flags;
    atomic_store_explicit(&event->_magic, CREW__MAGIC_EVENT, memory_order_release);
    return 0;
}

int crew_event_destroy(crew_event *event) {
    if (!CREW__VALID(event, CREW__MAGIC_EVENT)) return CREW_EINVAL;
    if (atomic_load(&event->_waiters) != 0) return CREW_EBUSY;
    atomic_store_explicit(&event->_magic, CREW__MAGIC_DEAD, memory_order_relaxed);
    return 0;
}

int crew_event_set(crew_event *event) {
    if (!CREW__VALID(event, CREW__MAGIC_EVENT)) return CREW_EINVAL;
    uint32_t w = atomic_load_explicit(&event->_flag, memory_order_relaxed);
    do {
        if (w & FLAG) return 0;
    } while (!atomic_compare_exchange_weak(&event->_flag, &w, (w + GENERATION) | FLAG));
    if (atomic_load(&event->_waiters) != 0)
        crew__futex_wake(&event->_flag, INT_MAX, (event->_flags & CREW_SHARED) != 0);
    return 0;
}

int crew_event_clear(crew_event *event) {
    if (!CREW__VALID(event, CREW__MAGIC_EVENT)) return CREW_EINVAL;
    atomic_fetch_and(&event->_flag, ~FLAG);
    return 0;
}

bool crew_event_is_set(const crew_event *event) {
    return CREW__VALID(event, CREW__MAGIC_EVENT) && (atomic_load(&event->_flag) & FLAG) != 0;
}

int crew_event_wait(crew_event *event, double timeout) {
    if (!CREW__VALID(event, CREW__MAGIC_EVENT)) return CREW_EINVAL;
    if (!(timeout >= 0.0)) return CREW_EINVAL;
    uint32_t seen = atomic_load_explicit(&event->_flag, memory_order_acquire);
    if (seen & FLAG) return 0;
    crew__deadline d;
    int rc = crew__deadline_init(&d, timeout);
    if (rc != 0) return rc;
    if (d.is_try) return CREW_ETIMEDOUT;
    bool shared = (event->_flags & CREW_SHARED) != 0;
    atomic_fetch_add(&event->_waiters, 1);
    int result;
    for (;;) {
        rc = crew__futex_wait(&event->_flag, seen, &d, shared);
        /* Any change of generation means a set() happened since we looked. */
        if ((atomic_load_explicit(&event->_flag, memory_order_acquire) | FLAG) != (seen | FLAG)) {
            result = 0;
            break;
        }
        if (rc == -ETIMEDOUT) {
            result = CREW_ETIMEDOUT;
            break;
        }
    }
    atomic_fetch_sub(&event->_waiters, 1);
    return result;
}
