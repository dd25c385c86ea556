/* crew_lock.
 *
 * Private mode: `_word` is a three-state futex word (0 free, 1 held, 2 held
 * and maybe contended; Drepper's mutex 2). Acquire CASes 0->1; on failure it
 * swaps in 2 and sleeps while the word is 2. Release swaps in 0 and wakes one
 * sleeper if the old value was 2. Any thread may release (Python's Lock
 * allows it). While the process has only ever had one thread, glibc's
 * __libc_single_threaded lets both skip the locked instructions, as glibc's
 * own mutex does.
 *
 * Shared mode: a robust, process-shared, error-checking pthread mutex. The
 * kernel's robust-futex list marks it when its holder dies, and the next
 * acquirer gets EOWNERDEAD, which we turn into CREW_EOWNERDEAD after marking
 * the mutex consistent, so the lock stays usable.
 *
 * `_owner` names the holder in both modes (see crew__lock_self): written by
 * the new holder after it acquires, cleared before release (the release of
 * the lock word orders it), read by rlock and condition to check ownership.
 */
#include <string.h>
#include <sys/single_threaded.h>

#include "sync_internal.h"

/* ThreadSanitizer intercepts pthread_mutex_lock and _trylock (including
 * their EOWNERDEAD repair) but not pthread_mutex_clocklock, and its mutex
 * annotations cannot express a repair. Sanitizer builds therefore make a
 * timed acquire of a shared lock out of trylock and 1 ms naps; every other
 * build sleeps in the kernel. */
#if defined(__SANITIZE_THREAD__)
#define CREW__TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define CREW__TSAN 1
#endif
#endif

#define SHARED_SLICE_NS 1000000000 /* 1 s */

static int robust_timedlock(pthread_mutex_t *m, const crew__deadline *d) {
#ifdef CREW__TSAN
    for (;;) {
        int rc = pthread_mutex_trylock(m);
        if (rc != EBUSY) return rc;
        if (crew__deadline_passed(d)) return ETIMEDOUT;
        struct timespec nap = {0, 1000000};
        nanosleep(&nap, NULL);
    }
#else
    struct timespec ts = crew__deadline_ts(d);
    return pthread_mutex_clocklock(m, CLOCK_MONOTONIC, &ts);
#endif
}

int crew_lock_init(crew_lock *lock, unsigned flags) {
    if (lock == NULL || (flags & ~CREW_SHARED) != 0) return CREW_EINVAL;
    memset(lock, 0, sizeof *lock);
    lock->_flags = flags;
    if (flags & CREW_SHARED) {
        pthread_mutexattr_t attr;
        if (pthread_mutexattr_init(&attr) != 0) return CREW_ENOMEM;
        int rc = pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
        if (rc == 0) rc = pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
        if (rc == 0) rc = pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_ERRORCHECK);
        if (rc == 0) rc = pthread_mutex_init(&lock->_robust, &attr);
        pthread_mutexattr_destroy(&attr);
        if (rc != 0) return -rc;
    }
    atomic_store_explicit(&lock->_magic, CREW__MAGIC_LOCK, memory_order_release);
    return 0;
}

int crew_lock_destroy(crew_lock *lock) {
    if (!CREW__VALID(lock, CREW__MAGIC_LOCK)) return CREW_EINVAL;
    if (crew__lock_shared(lock)) {
        /* glibc does not refuse to destroy a held robust mutex; find out by
         * trying it (a holder that died leaves it free for this). */
        int rc = pthread_mutex_trylock(&lock->_robust);
        if (rc == EOWNERDEAD) pthread_mutex_consistent(&lock->_robust);
        else if (rc != 0) return CREW_EBUSY;
        pthread_mutex_unlock(&lock->_robust);
        if (pthread_mutex_destroy(&lock->_robust) != 0) return CREW_EBUSY;
    } else if (atomic_load_explicit(&lock->_word, memory_order_relaxed) != 0) {
        return CREW_EBUSY;
    }
    atomic_store_explicit(&lock->_magic, CREW__MAGIC_DEAD, memory_order_relaxed);
    return 0;
}

/* The contended path sleeps at once, as glibc's does. Spinning first was
 * measured (bench_sync, two threads on one counter) at 0.3-0.6x of
 * pthread_mutex's throughput: a spinning waiter keeps stealing the lock's
 * cache line from the holder and hands the lock back and forth on every
 * operation, where a sleeping waiter lets the holder run on alone. */
static int lock_wait_private(crew_lock *lock, const crew__deadline *d) {
    uint32_t c = atomic_exchange_explicit(&lock->_word, 2, memory_order_acquire);
    while (c != 0) {
        if (crew__futex_wait(&lock->_word, 2, d, false) == -ETIMEDOUT) return CREW_ETIMEDOUT;
        c = atomic_exchange_explicit(&lock->_word, 2, memory_order_acquire);
    }
    return 0;
}

static int lock_acquire_shared(crew_lock *lock, const crew__deadline *d) {
    int rc;
    if (d->is_try) {
        rc = pthread_mutex_trylock(&lock->_robust);
    } else if (crew__deadline_forever(d)) {
        /* In slices: when a holder dies the kernel wakes one sleeper, and if
         * that one is killed too before it takes the lock, the others could
         * sleep on a free lock until someone new comes along. */
        do {
            crew__deadline slice = {crew__now_ns() + SHARED_SLICE_NS, false};
            rc = robust_timedlock(&lock->_robust, &slice);
        } while (rc == ETIMEDOUT);
    } else {
        rc = robust_timedlock(&lock->_robust, d);
    }
    switch (rc) {
    case 0:
        break;
    case EOWNERDEAD:
        pthread_mutex_consistent(&lock->_robust);
        atomic_store_explicit(&lock->_owner, (uintptr_t)crew__tid(), memory_order_relaxed);
        return CREW_EOWNERDEAD;
    case EBUSY:
        /* trylock on a lock we hold also says EBUSY: keep one answer for
         * self-deadlock whatever the timeout. */
        return crew__lock_owned(lock) ? CREW_EDEADLK : CREW_EBUSY;
    default:
        return -rc; /* ETIMEDOUT, EDEADLK (already ours), EAGAIN */
    }
    atomic_store_explicit(&lock->_owner, (uintptr_t)crew__tid(), memory_order_relaxed);
    return 0;
}

int crew__lock_acquire_dl(crew_lock *lock, const crew__deadline *d) {
    if (crew__lock_shared(lock)) return lock_acquire_shared(lock, d);
    uint32_t c = 0;
    if (!atomic_compare_exchange_strong_explicit(&lock->_word, &c, 1, memory_order_acquire,
                                                 memory_order_relaxed)) {
        if (d->is_try) return CREW_EBUSY;
        int rc = lock_wait_private(lock, d);
        if (rc != 0) return rc;
    }
    atomic_store_explicit(&lock->_owner, crew__thread_key(), memory_order_relaxed);
    return 0;
}

int crew_lock_acquire(crew_lock *lock, double timeout) {
    if (!CREW__VALID(lock, CREW__MAGIC_LOCK)) return CREW_EINVAL;
    if (!crew__lock_shared(lock) && timeout >= 0.0) {
        /* Fast path: an uncontended acquire needs no deadline. */
        if (__libc_single_threaded && atomic_load_explicit(&lock->_word, memory_order_relaxed) == 0) {
            atomic_store_explicit(&lock->_word, 1, memory_order_relaxed);
            atomic_store_explicit(&lock->_owner, crew__thread_key(), memory_order_relaxed);
            return 0;
        }
        uint32_t c = 0;
        if (atomic_compare_exchange_strong_explicit(&lock->_word, &c, 1, memory_order_acquire,
                                                    memory_order_relaxed)) {
            atomic_store_explicit(&lock->_owner, crew__thread_key(), memory_order_relaxed);
            return 0;
        }
        if (timeout == 0.0) return CREW_EBUSY;
    }
    crew__deadline d;
    int rc = crew__deadline_init(&d, timeout);
    if (rc != 0) return rc;
    return crew__lock_acquire_dl(lock, &d);
}

void crew__lock_release_held(crew_lock *lock) {
    atomic_store_explicit(&lock->_owner, 0, memory_order_relaxed);
    if (crew__lock_shared(lock)) {
        pthread_mutex_unlock(&lock->_robust);
    } else if (atomic_exchange_explicit(&lock->_word, 0, memory_order_release) == 2) {
        crew__futex_wake(&lock->_word, 1, false);
    }
}

int crew_lock_release(crew_lock *lock) {
    if (!CREW__VALID(lock, CREW__MAGIC_LOCK)) return CREW_EINVAL;
    if (crew__lock_shared(lock)) {
        if (!crew__lock_owned(lock)) return CREW_EPERM;
        crew__lock_release_held(lock);
        return 0;
    }
    atomic_store_explicit(&lock->_owner, 0, memory_order_relaxed);
    uint32_t old;
    if (__libc_single_threaded) {
        old = atomic_load_explicit(&lock->_word, memory_order_relaxed);
        atomic_store_explicit(&lock->_word, 0, memory_order_relaxed);
    } else {
        old = atomic_exchange_explicit(&lock->_word, 0, memory_order_release);
    }
    if (old == 0) return CREW_EPERM;
    if (old == 2) crew__futex_wake(&lock->_word, 1, false);
    return 0;
}

bool crew_lock_locked(const crew_lock *lock) {
    if (!CREW__VALID(lock, CREW__MAGIC_LOCK)) return false;
    if (crew__lock_shared(lock)) return atomic_load_explicit(&lock->_owner, memory_order_relaxed) != 0;
    return atomic_load_explicit(&lock->_word, memory_order_relaxed) != 0;
}
