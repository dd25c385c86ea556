/* Synchronization primitives: the counterparts of threading.Lock, RLock,
 * Semaphore, BoundedSemaphore, Event, Condition and Barrier (and of their
 * multiprocessing twins).
 *
 * Every object here is caller-allocated, so it can live on the stack, inside
 * another struct, or in shared memory: crew_X_init(&x, ...) / crew_X_destroy.
 * The fields are private; their size is part of the ABI.
 *
 * Timeouts are double seconds (see clock.h): 0 tries once, CREW_FOREVER
 * blocks, negative or NaN is CREW_EINVAL. An acquire that finds the object
 * unavailable with a 0 timeout returns CREW_EBUSY; one whose positive timeout
 * expires returns CREW_ETIMEDOUT. A wait (event, condition, barrier) whose
 * time runs out returns CREW_ETIMEDOUT, with 0 as with any other timeout.
 *
 * CREW_SHARED: init with this flag and place the object in memory shared by
 * several processes (a MAP_SHARED mapping made before fork, or crew's arena)
 * and it works between those processes exactly as between threads. A shared
 * lock whose holder dies (thread or process) is handed to the next acquirer
 * with CREW_EOWNERDEAD so that it can repair the state it protects.
 *
 * Destroyed or never-initialised objects are detected where a marker in the
 * object allows it and give CREW_EINVAL; NULL arguments give CREW_EINVAL.
 * All calls here are safe in a forked child on objects the child may use:
 * private objects the fork copied are usable if no other thread of the parent
 * held or waited on them at the fork; shared objects work as usual.
 */
#ifndef CREW_SYNC_H
#define CREW_SYNC_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include "export.h"

/* Flag for every crew_X_init here: the object works between processes. */
#define CREW_SHARED 1u

/* ------------------------------------------------------------------ lock */

/* threading.Lock. Private locks are a futex word with a short adaptive spin;
 * shared locks are robust process-shared pthread mutexes (owner death is
 * detected by the kernel). */
typedef struct crew_lock {
    _Atomic uint32_t _word;    /* private: 0 free, 1 held, 2 held and contended */
    _Atomic uintptr_t _owner;  /* the holder (kernel thread id when shared, a
                                  per-thread key kept across fork when
                                  private), 0 when free */
    uint32_t _flags;
    _Atomic uint32_t _magic;
    pthread_mutex_t _robust;   /* shared mode only */
} crew_lock;

/* Initialise an unlocked lock; flags 0 or CREW_SHARED. Returns 0 or
 * CREW_EINVAL. */
CREW_API int crew_lock_init(crew_lock *lock, unsigned flags);

/* Destroy an unlocked lock. CREW_EBUSY if it is held (left intact). A shared
 * lock whose holder died may be destroyed. */
CREW_API int crew_lock_destroy(crew_lock *lock);

/* Acquire, waiting up to `timeout` seconds. Returns 0; CREW_EBUSY (timeout 0)
 * or CREW_ETIMEDOUT when not acquired; CREW_EOWNERDEAD, with the lock
 * acquired, when a shared lock's holder died holding it. Acquiring a private
 * lock the caller already holds waits (as in Python) for another thread to
 * release it; for a shared lock, which only its holder may release, that is
 * CREW_EDEADLK at once, whatever the timeout. Blocks. */
CREW_API int crew_lock_acquire(crew_lock *lock, double timeout);

/* Release. A private lock may be released by any thread, as in Python; a
 * shared lock only by its holder (CREW_EPERM otherwise, because robustness
 * needs an owner). Releasing an unlocked lock is CREW_EPERM. */
CREW_API int crew_lock_release(crew_lock *lock);

/* True if some thread holds the lock (a snapshot). */
CREW_API bool crew_lock_locked(const crew_lock *lock);

/* ----------------------------------------------------------------- rlock */

/* threading.RLock: re-entrant; the holding thread may acquire it again and
 * must release it as many times. */
typedef struct crew_rlock {
    crew_lock _lock;
    uint32_t _count;           /* recursion depth; written only by the holder */
    uint32_t _magic;
} crew_rlock;

CREW_API int crew_rlock_init(crew_rlock *rlock, unsigned flags);
/* CREW_EBUSY if held. */
CREW_API int crew_rlock_destroy(crew_rlock *rlock);
/* As crew_lock_acquire; the holder re-acquires at once (count + 1). A shared
 * rlock whose holder died gives CREW_EOWNERDEAD with the lock held once. */
CREW_API int crew_rlock_acquire(crew_rlock *rlock, double timeout);
/* Undo one acquire. CREW_EPERM if the caller is not the holder. */
CREW_API int crew_rlock_release(crew_rlock *rlock);
/* True if the calling thread holds it. */
CREW_API bool crew_rlock_owned(const crew_rlock *rlock);

/* ------------------------------------------------------------- semaphore */

/* threading.Semaphore and BoundedSemaphore. */
typedef struct crew_sem {
    _Atomic uint32_t _value;   /* the count; the futex word */
    _Atomic uint32_t _waiters; /* threads blocked or about to block */
    uint32_t _bound;           /* bounded: the most _value may reach */
    uint32_t _flags;
    _Atomic uint32_t _magic;
} crew_sem;

/* The largest count a semaphore may hold. */
#define CREW_SEM_VALUE_MAX 0x7fffffffu

/* A semaphore starting at `value` (0..CREW_SEM_VALUE_MAX). */
CREW_API int crew_sem_init(crew_sem *sem, unsigned value, unsigned flags);
/* A bounded semaphore: releasing it above its initial `value` is an error. */
CREW_API int crew_sem_init_bounded(crew_sem *sem, unsigned value, unsigned flags);
/* CREW_EBUSY if threads are waiting on it. */
CREW_API int crew_sem_destroy(crew_sem *sem);
/* Take one unit, waiting up to `timeout`. 0, CREW_EBUSY (timeout 0) or
 * CREW_ETIMEDOUT. Blocks. */
CREW_API int crew_sem_acquire(crew_sem *sem, double timeout);
/* Add n units (n >= 1) and wake up to n waiters. CREW_EOVERFLOW, changing
 * nothing, if that passes a bounded semaphore's bound or CREW_SEM_VALUE_MAX. */
CREW_API int crew_sem_release(crew_sem *sem, unsigned n);
/* The current count (a snapshot), or a negative code. */
CREW_API int crew_sem_value(const crew_sem *sem);

/* ----------------------------------------------------------------- event */

/* threading.Event: a flag threads can wait for. */
typedef struct crew_event {
    _Atomic uint32_t _flag;    /* bit 0: the flag; above: set() count; futex word */
    _Atomic uint32_t _waiters;
    uint32_t _flags;
    _Atomic uint32_t _magic;
} crew_event;

CREW_API int crew_event_init(crew_event *event, unsigned flags);
/* CREW_EBUSY if threads are waiting on it. */
CREW_API int crew_event_destroy(crew_event *event);
/* Set the flag and wake every waiter. */
CREW_API int crew_event_set(crew_event *event);
/* Clear the flag. */
CREW_API int crew_event_clear(crew_event *event);
/* The flag (a snapshot); false for an invalid event. */
CREW_API bool crew_event_is_set(const crew_event *event);
/* Wait until the flag is set: 0, or CREW_ETIMEDOUT. Blocks. */
CREW_API int crew_event_wait(crew_event *event, double timeout);

/* ------------------------------------------------------------- condition */

/* threading.Condition. It works with a lock: its own re-entrant one (as
 * Python's default), a crew_lock, or a crew_rlock. Waiting or notifying
 * without holding that lock is CREW_EPERM. */
typedef struct crew_cond {
    intptr_t _ext;             /* external lock's address minus the condition's:
                                  self-relative, so both may be mapped anywhere */
    uint32_t _kind;            /* own rlock, external lock, external rlock */
    crew_rlock _own;
    uint32_t _waiters;         /* waiting, not yet notified; under the lock */
    uint32_t _signals;         /* notified, not yet woken; under the lock */
    _Atomic uint32_t _seq;     /* bumped by every notify; the futex word */
    uint32_t _flags;
    _Atomic uint32_t _magic;
} crew_cond;

/* A condition over `lock`, or over its own rlock when `lock` is NULL. A
 * CREW_SHARED condition needs a CREW_SHARED lock (CREW_EINVAL otherwise). The
 * condition finds an external lock by its distance from itself, so the two
 * must stay together: in one struct or one shared mapping, which processes
 * may map at different addresses. */
CREW_API int crew_cond_init(crew_cond *cond, crew_lock *lock, unsigned flags);
/* A condition over an external rlock: wait releases every level of it and
 * restores them after. */
CREW_API int crew_cond_init_rlock(crew_cond *cond, crew_rlock *rlock, unsigned flags);
/* CREW_EBUSY if threads are waiting on it. */
CREW_API int crew_cond_destroy(crew_cond *cond);
/* Acquire / release the condition's lock. */
CREW_API int crew_cond_acquire(crew_cond *cond, double timeout);
CREW_API int crew_cond_release(crew_cond *cond);
/* Release the lock, wait for a notify, re-acquire the lock. Returns 0 when
 * notified, CREW_ETIMEDOUT, CREW_EPERM when the caller does not hold the lock,
 * CREW_EOWNERDEAD (lock held) if a shared lock's holder died meanwhile.
 * The lock is held again on every return but CREW_EPERM/CREW_EINVAL. Blocks. */
CREW_API int crew_cond_wait(crew_cond *cond, double timeout);
/* Wait until pred(arg) is true (it is evaluated with the lock held), with one
 * deadline for the whole wait. 0 when true, else as crew_cond_wait. */
CREW_API int crew_cond_wait_for(crew_cond *cond, bool (*pred)(void *arg), void *arg,
                                double timeout);
/* Wake at most n waiting threads (0 does nothing). The caller must hold the
 * lock. */
CREW_API int crew_cond_notify(crew_cond *cond, unsigned n);
/* Wake every waiting thread. The caller must hold the lock. */
CREW_API int crew_cond_notify_all(crew_cond *cond);

/* --------------------------------------------------------------- barrier */

/* threading.Barrier: `parties` threads wait until all have arrived. */
typedef int (*crew_barrier_action)(void *arg);

typedef struct crew_barrier_options {
    crew_barrier_action action; /* run by one thread (the last to arrive)
                                   before the others are released, with the
                                   barrier's internal lock held: it may call
                                   crew_barrier_parties, _n_waiting and
                                   _broken, not wait, reset, abort or
                                   destroy. A nonzero return breaks the
                                   barrier. */
    void *arg;
    unsigned flags;             /* 0 or CREW_SHARED */
} crew_barrier_options;

typedef struct crew_barrier {
    _Atomic uint32_t _mutex;    /* internal futex lock guarding the fields below */
    _Atomic uint32_t _seq;      /* bumped on every state change; the futex word */
    uint32_t _parties;
    _Atomic uint32_t _count;    /* threads inside wait() */
    _Atomic int32_t _state;     /* filling, draining, resetting, broken */
    uint32_t _flags;
    crew_barrier_action _action;
    void *_arg;
    _Atomic uint32_t _magic;
} crew_barrier;

/* A barrier for `parties` (>= 1) threads; opts may be NULL. */
CREW_API int crew_barrier_init(crew_barrier *barrier, unsigned parties,
                               const crew_barrier_options *opts);
/* CREW_EBUSY if threads are waiting in it. */
CREW_API int crew_barrier_destroy(crew_barrier *barrier);
/* Wait for all parties. Returns the arrival index 0..parties-1 (the last to
 * arrive gets parties-1 and runs the action); CREW_EBROKEN if the barrier is
 * or becomes broken (abort, reset, another waiter's timeout, a failed action);
 * CREW_ETIMEDOUT for the waiter whose own timeout broke it; for the thread
 * that ran a failing action, the action's return if negative, else
 * CREW_EBROKEN. Blocks. */
CREW_API int crew_barrier_wait(crew_barrier *barrier, double timeout);
/* Back to the empty state; threads waiting now get CREW_EBROKEN. */
CREW_API int crew_barrier_reset(crew_barrier *barrier);
/* Break the barrier: current and future waiters get CREW_EBROKEN until reset. */
CREW_API int crew_barrier_abort(crew_barrier *barrier);
/* Parties, threads waiting now, and broken state (snapshots). */
CREW_API int crew_barrier_parties(const crew_barrier *barrier);
CREW_API int crew_barrier_n_waiting(crew_barrier *barrier);
CREW_API bool crew_barrier_broken(crew_barrier *barrier);

#endif
