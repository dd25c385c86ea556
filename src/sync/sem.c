/* crew_sem: `_value` is the count and the futex word; `_waiters` counts
 * threads that found it zero and are going to sleep.
 *
 * The handshake that makes sleeping safe (a Dekker pair, both sides
 * seq_cst): a waiter increments _waiters, then sleeps only while _value is
 * still 0 (the kernel re-reads it); a releaser adds to _value, then reads
 * _waiters and wakes if it is nonzero. Either the releaser sees the waiter,
 * or the waiter's futex sees the new value and does not sleep. */
#include <string.h>

#include "sync_internal.h"

#define SEM_SPIN 50

static int sem_init_common(crew_sem *sem, unsigned value, unsigned bound, unsigned flags) {
    if (sem == NULL || (flags & ~CREW_SHARED) != 0 || value > CREW_SEM_VALUE_MAX) return CREW_EINVAL;
    memset(sem, 0, sizeof *sem);
    atomic_store_explicit(&sem->_value, value, memory_order_relaxed);
    sem->_bound = bound;
    sem->_flags = flags;
    atomic_store_explicit(&sem->_magic, CREW__MAGIC_SEM, memory_order_release);
    return 0;
}

int crew_sem_init(crew_sem *sem, unsigned value, unsigned flags) {
    return sem_init_common(sem, value, CREW_SEM_VALUE_MAX, flags);
}

int crew_sem_init_bounded(crew_sem *sem, unsigned value, unsigned flags) {
    return sem_init_common(sem, value, value, flags);
}

int crew_sem_destroy(crew_sem *sem) {
    if (!CREW__VALID(sem, CREW__MAGIC_SEM)) return CREW_EINVAL;
    if (atomic_load(&sem->_waiters) != 0) return CREW_EBUSY;
    atomic_store_explicit(&sem->_magic, CREW__MAGIC_DEAD, memory_order_relaxed);
    return 0;
}

static bool sem_try(crew_sem *sem) {
    uint32_t v = atomic_load_explicit(&sem->_value, memory_order_relaxed);
    while (v > 0) {
        if (atomic_compare_exchange_weak_explicit(&sem->_value, &v, v - 1, memory_order_acquire,
                                                  memory_order_relaxed))
            return true;
    }
    return false;
}

int crew_sem_acquire(crew_sem *sem, double timeout) {
    if (!CREW__VALID(sem, CREW__MAGIC_SEM)) return CREW_EINVAL;
    if (!(timeout >= 0.0)) return CREW_EINVAL;
    if (sem_try(sem)) return 0;
    if (timeout == 0.0) return CREW_EBUSY;
    crew__deadline d;
    int rc = crew__deadline_init(&d, timeout);
    if (rc != 0) return rc;
    bool shared = (sem->_flags & CREW_SHARED) != 0;
    /* A release usually follows shortly in producer/consumer hand-offs. */
    if (crew__smp()) {
        for (int i = 0; i < SEM_SPIN; i++) {
            crew__cpu_relax();
            if (atomic_load_explicit(&sem->_value, memory_order_relaxed) != 0 && sem_try(sem)) return 0;
        }
    }
    for (;;) {
        if (sem_try(sem)) return 0;
        atomic_fetch_add(&sem->_waiters, 1);
        rc = crew__futex_wait(&sem->_value, 0, &d, shared);
        atomic_fetch_sub_explicit(&sem->_waiters, 1, memory_order_relaxed);
        if (rc == -ETIMEDOUT) return sem_try(sem) ? 0 : CREW_ETIMEDOUT;
    }
}

int crew_sem_release(crew_sem *sem, unsigned n) {
    if (!CREW__VALID(sem, CREW__MAGIC_SEM)) return CREW_EINVAL;
    if (n == 0) return CREW_EINVAL;
    uint32_t v = atomic_load_explicit(&sem->_value, memory_order_relaxed);
    do {
        if (n > sem->_bound - v) return CREW_EOVERFLOW;
    } while (!atomic_compare_exchange_weak(&sem->_value, &v, v + n));
    if (atomic_load(&sem->_waiters) != 0)
        crew__futex_wake(&sem->_value, n > INT_MAX ? INT_MAX : (int)n, (sem->_flags & CREW_SHARED) != 0);
    return 0;
}

int crew_sem_value(const crew_sem *sem) {
    if (!CREW__VALID(sem, CREW__MAGIC_SEM)) return CREW_EINVAL;
    return (int)atomic_load_explicit(&sem->_value, memory_order_relaxed);
}
