/* crew_rlock: a crew_lock plus a recursion count. `_count` is touched only
 * by the thread that holds the inner lock, so it needs no atomics; the inner
 * lock's `_owner` tells a thread whether it is that holder. */
#include <string.h>

#include "sync_internal.h"

int crew_rlock_init(crew_rlock *rlock, unsigned flags) {
    if (rlock == NULL) return CREW_EINVAL;
    int rc = crew_lock_init(&rlock->_lock, flags);
    if (rc != 0) return rc;
    rlock->_count = 0;
    rlock->_magic = CREW__MAGIC_RLOCK;
    return 0;
}

static bool rlock_valid(const crew_rlock *r) {
    return r != NULL && r->_magic == CREW__MAGIC_RLOCK && CREW__VALID(&r->_lock, CREW__MAGIC_LOCK);
}

int crew_rlock_destroy(crew_rlock *rlock) {
    if (!rlock_valid(rlock)) return CREW_EINVAL;
    int rc = crew_lock_destroy(&rlock->_lock);
    if (rc == 0) rlock->_magic = CREW__MAGIC_DEAD;
    return rc;
}

int crew_rlock_acquire(crew_rlock *rlock, double timeout) {
    if (!rlock_valid(rlock)) return CREW_EINVAL;
    if (crew__lock_owned(&rlock->_lock)) {
        if (!(timeout >= 0.0)) return CREW_EINVAL;
        if (rlock->_count == UINT32_MAX) return CREW_EOVERFLOW;
        rlock->_count++;
        return 0;
    }
    int rc = crew_lock_acquire(&rlock->_lock, timeout);
    if (rc == 0 || rc == CREW_EOWNERDEAD) rlock->_count = 1;
    return rc;
}

int crew_rlock_release(crew_rlock *rlock) {
    if (!rlock_valid(rlock)) return CREW_EINVAL;
    if (!crew__lock_owned(&rlock->_lock)) return CREW_EPERM;
    if (--rlock->_count == 0) crew__lock_release_held(&rlock->_lock);
    return 0;
}

bool crew_rlock_owned(const crew_rlock *rlock) {
    return rlock_valid(rlock) && crew__lock_owned(&rlock->_lock);
}
