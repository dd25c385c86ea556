/* Internal to the sync module: object markers, argument checks, the lock
 * entry points the condition and rlock build on, and a small futex mutex
 * for short internal critical sections. */
#ifndef CREW_SRC_SYNC_INTERNAL_H
#define CREW_SRC_SYNC_INTERNAL_H

#include <stdatomic.h>
#include <stdbool.h>

#include "crew/clock.h"
#include "crew/error.h"
#include "crew/sync.h"
#include "deadline.h"
#include "futex.h"
#include "tid.h"

/* Markers written by init and overwritten by destroy, so that use of a
 * destroyed (or never initialised, zeroed) object gives CREW_EINVAL. */
enum {
    CREW__MAGIC_LOCK = 0x4b434f4cu,
    CREW__MAGIC_RLOCK = 0x4b434c52u,
    CREW__MAGIC_SEM = 0x204d4553u,
    CREW__MAGIC_EVENT = 0x544e5645u,
    CREW__MAGIC_COND = 0x444e4f43u,
    CREW__MAGIC_BARRIER = 0x52524142u,
    CREW__MAGIC_DEAD = 0xdeaddeadu,
};

#define CREW__VALID(obj, magic) \
    ((obj) != NULL && atomic_load_explicit(&(obj)->_magic, memory_order_relaxed) == (magic))

/* Acquire with a deadline already computed (no argument checks). */
int crew__lock_acquire_dl(crew_lock *lock, const crew__deadline *d);
/* Wait on a condition whose lock the caller holds, until a notify or the
 * deadline (no argument or ownership checks): crew_cond_wait's core. */
int crew__cond_wait_dl(crew_cond *cond, const crew__deadline *d);

/* Release by the caller, who must hold it (no argument checks). */
void crew__lock_release_held(crew_lock *lock);

static inline bool crew__lock_shared(const crew_lock *lock) { return (lock->_flags & CREW_SHARED) != 0; }

/* The value `_owner` holds while the calling thread holds `lock`: the kernel
 * thread id for a shared lock (unique across processes, and what the robust
 * mutex itself records); for a private lock, a key that the thread keeps in a
 * forked child, so that a lock it held at fork is still its own there, as in
 * Python. */
static inline uintptr_t crew__lock_self(const crew_lock *lock) {
    return crew__lock_shared(lock) ? (uintptr_t)crew__tid() : crew__thread_key();
}

static inline bool crew__lock_owned(const crew_lock *lock) {
    return atomic_load_explicit(&lock->_owner, memory_order_relaxed) == crew__lock_self(lock);
}

/* A mutex for a few instructions of internal state: 0 free, 1 held, 2 held
 * with sleepers (Drepper, "Futexes Are Tricky", mutex 2). No timeout, no
 * owner, no robustness: never hold it across user code that may block. */
static inline void crew__mutex_lock(_Atomic uint32_t *m, bool shared) {
    uint32_t c = 0;
    if (atomic_compare_exchange_strong_explicit(m, &c, 1, memory_order_acquire, memory_order_relaxed))
        return;
    if (c != 2) c = atomic_exchange_explicit(m, 2, memory_order_acquire);
    while (c != 0) {
        crew__futex_wait(m, 2, NULL, shared);
        c = atomic_exchange_explicit(m, 2, memory_order_acquire);
    }
}

static inline void crew__mutex_unlock(_Atomic uint32_t *m, bool shared) {
    if (atomic_exchange_explicit(m, 0, memory_order_release) == 2) crew__futex_wake(m, 1, shared);
}

#endif
