/* crew_cond.
 *
 * Protocol. `_waiters` and `_signals` are protected by the condition's lock
 * (only its holder reads or writes them), and this invariant holds whenever
 * the lock is free:
 *     _waiters + _signals == number of threads inside crew_cond_wait.
 * wait() adds itself to _waiters, reads `_seq`, releases the lock and sleeps
 * on `_seq`. notify(n) moves k = min(n, _waiters) from _waiters to _signals,
 * bumps `_seq` and wakes k sleepers. A thread that wakes (for any reason)
 * re-takes the lock; if _signals > 0 it consumes one and returns 0, else if
 * its deadline has passed it removes itself from _waiters and times out, else
 * it sleeps again. Every notification is consumed by exactly one returning
 * thread, so notify(n) wakes at most n, and one is never lost: _signals > 0
 * implies a thread inside wait that will see it.
 *
 * `_seq` is read under the lock and bumped under the lock, so a notify that
 * comes after our read changes the word and the futex wait does not sleep
 * (no lost wake-up between releasing the lock and sleeping).
 */
#include <string.h>

#include "sync_internal.h"

enum { OWN_RLOCK, EXT_LOCK, EXT_RLOCK };

static int cond_init_common(crew_cond *cond, crew_lock *lock, crew_rlock *rlock, unsigned flags) {
    if (cond == NULL || (flags & ~CREW_SHARED) != 0) return CREW_EINVAL;
    bool shared = (flags & CREW_SHARED) != 0;
    if (lock != NULL && (!CREW__VALID(lock, CREW__MAGIC_LOCK) || crew__lock_shared(lock) != shared))
        return CREW_EINVAL;
    if (rlock != NULL && (rlock->_magic != CREW__MAGIC_RLOCK || crew__lock_shared(&rlock->_lock) != shared))
        return CREW_EINVAL;
    memset(cond, 0, sizeof *cond);
    if (lock) {
        cond->_kind = EXT_LOCK;
        cond->_ext = (intptr_t)((uintptr_t)lock - (uintptr_t)cond);
    } else if (rlock) {
        cond->_kind = EXT_RLOCK;
        cond->_ext = (intptr_t)((uintptr_t)rlock - (uintptr_t)cond);
    } else {
        cond->_kind = OWN_RLOCK;
        int rc = crew_rlock_init(&cond->_own, flags);
        if (rc != 0) return rc;
    }
    cond->_flags = flags;
    atomic_store_explicit(&cond->_magic, CREW__MAGIC_COND, memory_order_release);
    return 0;
}

int crew_cond_init(crew_cond *cond, crew_lock *lock, unsigned flags) {
    return cond_init_common(cond, lock, NULL, flags);
}

int crew_cond_init_rlock(crew_cond *cond, crew_rlock *rlock, unsigned flags) {
    if (rlock == NULL) return CREW_EINVAL;
    return cond_init_common(cond, NULL, rlock, flags);
}

static void *cond_ext(crew_cond *cond) { return (void *)((uintptr_t)cond + (uintptr_t)cond->_ext); }

/* The plain lock the condition is over, or NULL when it is over an rlock. */
static crew_lock *cond_lock(crew_cond *cond) { return cond->_kind == EXT_LOCK ? cond_ext(cond) : NULL; }

/* The rlock in use when the condition is not over a plain lock. */
static crew_rlock *cond_rlock(crew_cond *cond) { return cond->_kind == EXT_RLOCK ? cond_ext(cond) : &cond->_own; }

static crew_lock *cond_inner(crew_cond *cond) {
    return cond->_kind == EXT_LOCK ? cond_ext(cond) : &cond_rlock(cond)->_lock;
}

int crew_cond_destroy(crew_cond *cond) {
    if (!CREW__VALID(cond, CREW__MAGIC_COND)) return CREW_EINVAL;
    crew_lock *inner = cond_inner(cond);
    if (crew__lock_owned(inner)) {
        if (cond->_waiters + cond->_signals != 0) return CREW_EBUSY;
    } else {
        /* Waiters release the lock while they sleep; take it to read. */
        int rc = crew_lock_acquire(inner, CREW_FOREVER);
        if (rc != 0 && rc != CREW_EOWNERDEAD) return CREW_EBUSY;
        bool busy = cond->_waiters + cond->_signals != 0;
        crew__lock_release_held(inner);
        if (busy) return CREW_EBUSY;
    }
    if (cond->_kind == OWN_RLOCK) {
        int rc = crew_rlock_destroy(&cond->_own);
        if (rc != 0) return rc;
    }
    atomic_store_explicit(&cond->_magic, CREW__MAGIC_DEAD, memory_order_relaxed);
    return 0;
}

int crew_cond_acquire(crew_cond *cond, double timeout) {
    if (!CREW__VALID(cond, CREW__MAGIC_COND)) return CREW_EINVAL;
    crew_lock *lock = cond_lock(cond);
    return lock ? crew_lock_acquire(lock, timeout) : crew_rlock_acquire(cond_rlock(cond), timeout);
}

int crew_cond_release(crew_cond *cond) {
    if (!CREW__VALID(cond, CREW__MAGIC_COND)) return CREW_EINVAL;
    crew_lock *lock = cond_lock(cond);
    return lock ? crew_lock_release(lock) : crew_rlock_release(cond_rlock(cond));
}

/* Let go of the lock entirely (every rlock level); returns what to restore. */
static uint32_t cond_release_all(crew_cond *cond) {
    uint32_t saved = 0;
    if (cond->_kind != EXT_LOCK) {
        crew_rlock *r = cond_rlock(cond);
        saved = r->_count;
        r->_count = 0;
    }
    crew__lock_release_held(cond_inner(cond));
    return saved;
}

/* Take the lock back (no time limit, as Python does) and restore its depth.
 * Returns 0 or CREW_EOWNERDEAD. */
static int cond_restore(crew_cond *cond, uint32_t saved) {
    static const crew__deadline forever = {INT64_MAX, false};
    int rc = crew__lock_acquire_dl(cond_inner(cond), &forever);
    if (cond->_kind != EXT_LOCK) cond_rlock(cond)->_count = saved;
    return rc == CREW_EOWNERDEAD ? rc : 0;
}

int crew__cond_wait_dl(crew_cond *cond, const crew__deadline *d) {
    bool shared = (cond->_flags & CREW_SHARED) != 0;
    int dead = 0;
    cond->_waiters++;
    for (;;) {
        uint32_t seq = atomic_load_explicit(&cond->_seq, memory_order_relaxed);
        uint32_t saved = cond_release_all(cond);
        int rc = crew__futex_wait(&cond->_seq, seq, d, shared);
        if (cond_restore(cond, saved) == CREW_EOWNERDEAD) dead = CREW_EOWNERDEAD;
        if (cond->_signals > 0) {
            cond->_signals--;
            return dead;
        }
        if (rc == -ETIMEDOUT || crew__deadline_passed(d) || d->is_try) {
            cond->_waiters--;
            return dead ? dead : CREW_ETIMEDOUT;
        }
    }
}

static int cond_check(crew_cond *cond) {
    if (!CREW__VALID(cond, CREW__MAGIC_COND)) return CREW_EINVAL;
    return crew__lock_owned(cond_inner(cond)) ? 0 : CREW_EPERM;
}

int crew_cond_wait(crew_cond *cond, double timeout) {
    int rc = cond_check(cond);
    if (rc != 0) return rc;
    crew__deadline d;
    rc = crew__deadline_init(&d, timeout);
    if (rc != 0) return rc;
    return crew__cond_wait_dl(cond, &d);
}

int crew_cond_wait_for(crew_cond *cond, bool (*pred)(void *arg), void *arg, double timeout) {
    int rc = cond_check(cond);
    if (rc != 0) return rc;
    if (pred == NULL) return CREW_EINVAL;
    crew__deadline d;
    rc = crew__deadline_init(&d, timeout);
    if (rc != 0) return rc;
    int dead = 0;
    while (!pred(arg)) {
        rc = crew__cond_wait_dl(cond, &d);
        if (rc == CREW_EOWNERDEAD) {
            dead = rc;
        } else if (rc == CREW_ETIMEDOUT) {
            return pred(arg) ? dead : CREW_ETIMEDOUT;
        }
    }
    return dead;
}

static int cond_notify(crew_cond *cond, uint32_t n) {
    int rc = cond_check(cond);
    if (rc != 0) return rc;
    uint32_t k = n < cond->_waiters ? n : cond->_waiters;
    if (k == 0) return 0;
    cond->_waiters -= k;
    cond->_signals += k;
    atomic_fetch_add_explicit(&cond->_seq, 1, memory_order_relaxed);
    crew__futex_wake(&cond->_seq, k > INT_MAX ? INT_MAX : (int)k, (cond->_flags & CREW_SHARED) != 0);
    return 0;
}

int crew_cond_notify(crew_cond *cond, unsigned n) { return cond_notify(cond, n); }

int crew_cond_notify_all(crew_cond *cond) { return cond_notify(cond, UINT32_MAX); }
