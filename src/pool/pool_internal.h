/* Internal to the pool module: the pool and worker records, the task
 * header every kind of work embeds, the scheduler's entry points (sched.c)
 * and the progress reporter (progress.c). */
#ifndef CREW_SRC_POOL_INTERNAL_H
#define CREW_SRC_POOL_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "crew/pool.h"
#include "crew/sync.h"
#include "deadline.h"
#include "pool/deque.h"
#include "tid.h"

typedef struct crew__worker crew__worker;

/* A unit of work in a deque or the injector. Each kind (a submitted task,
 * a piece of a loop, an imap chunk) embeds this first and recovers itself
 * from the pointer. `run` is called exactly once per push, on a worker
 * (w != NULL) or, for work cancelled by terminate, on the terminating
 * thread (w == NULL). */
struct crew__task {
    void (*run)(crew__task *t, crew__worker *w);
};

struct crew__worker {
    crew__deque deque;          /* owner: this worker's thread */
    crew_pool *pool;
    size_t id;
    uint64_t seed;              /* victim choice (xorshift); owner only */
    /* group.c's throttle (owner only): a burst of tasks run at once, and
     * the window of queued tasks it is decided on. */
    uint32_t burst_left;
    uint32_t win_pushes;
    int64_t burst_t0, win_t0, win_taken;
    _Atomic size_t accepted;    /* units this worker accepted (owner writes) */
    _Atomic size_t completed;   /* units this worker completed (owner writes) */
    /* CREW_PROCESSES: the child process that runs this worker's calls, and
     * their mailbox in the arena (proc.c). The worker thread replaces the
     * child; child_lock guards the pointer against terminate's kill. */
    struct crew__mailbox *mb;
    struct crew_process *child;
    crew_lock child_lock;
    pthread_t thread;
    bool started;               /* thread created (creator only) */
};

/* Fields are grouped by who writes them, one group per cache line, so that
 * the per-task paths (workers reading the flags, outside threads counting
 * their submissions) do not bounce a line between cores. */
struct crew_pool {
    /* Read-mostly: set at creation, or once in the pool's life. */
    crew_pool_kind kind;
    size_t max_tasks_per_child; /* CREW_PROCESSES */
    unsigned retries;           /* CREW_PROCESSES */
    size_t nworkers;
    crew__worker *workers;      /* nworkers of them, each cache-line aligned */
    int32_t pid;                /* creator; other processes get CREW_ECHILD */
    bool deques;                /* the workers' deques are initialised */
    size_t max_pending;
    _Atomic int closed;
    _Atomic int terminating;    /* not-started work is cancelled */
    _Atomic int stop;           /* workers exit when they find no work */

    /* The injector: work from threads that are not this pool's workers.
     * inj_lock guards the ring; inj_count mirrors its length for lock-free
     * "is there work" checks (written under the lock). */
    _Alignas(64) crew_lock inj_lock;
    crew__task **inj_ring;
    size_t inj_head, inj_len, inj_cap;
    _Atomic size_t inj_count;

    /* Sleeping. An idle worker announces itself in `sleepers`, looks for
     * work once more, then waits on `epoch` (a futex word); whoever makes
     * work or completes something a sleeper may wait for bumps `epoch` and
     * wakes. `spinning` counts workers still looking for work before they
     * sleep: while one spins, a new task needs no wake-up. `helpers` counts
     * sleepers that wait for a completion (a nested join or future), which
     * every completion wakes. All seq_cst: each side writes its own word,
     * then reads the other's (the Dekker pattern), so no wake-up is lost. */
    _Alignas(64) _Atomic uint32_t epoch;
    _Atomic uint32_t sleepers;
    _Atomic uint32_t spinning;
    _Atomic uint32_t helpers;

    /* Lifetime. Every accepted unit of work (a submit, a map, a for, an
     * imap chunk) is counted once when accepted and once when completed, on
     * the counting thread's own counters: a worker's `accepted`/`completed`
     * (single writer, no read-modify-write), or the pool's ext_* for other
     * threads. The pool is quiet when the sums agree, read completed first
     * (crew__pool_quiet): counters only grow and each completion follows its
     * acceptance, so equal sums mean that at some instant between the two
     * reads nothing was outstanding, and after close nothing new can come.
     * An outside acceptor counts first and then checks `closed`; close sets
     * `closed` before join reads: seq_cst on both, so a unit is either
     * refused or waited for. `quiet` is a futex word joiners sleep on;
     * workers about to sleep and outside completers bump it when
     * `joiners` is not 0. */
    _Alignas(64) _Atomic size_t ext_accepted;
    _Atomic size_t ext_completed;
    _Atomic uint32_t quiet;
    _Atomic uint32_t joiners;

    _Alignas(64) crew_lock state_lock; /* serialises join's final step and imap refills */
    bool joined;                /* under state_lock */

    _Alignas(64) _Atomic size_t submitted; /* submission index counter */
    _Atomic size_t worker_deaths; /* CREW_PROCESSES: children that died */
    _Atomic int last_death;     /* and how the last one ended (exit code) */

    /* Backpressure (max_pending > 0): `pending` counts outside submissions
     * not yet started; a full submitter waits on the futex word bp_seq. */
    _Alignas(64) _Atomic size_t pending;
    _Atomic uint32_t bp_seq;
    _Atomic uint32_t bp_waiters;

    /* Start-up: workers report their initializer's outcome. */
    int (*initializer)(void *);
    void *initarg;
    _Atomic uint32_t init_done; /* workers that ran their initializer (futex) */
    _Atomic int init_rc;        /* the first failure, or 0 */
    char name[16];
};

/* ------------------------------------------------------------ sched.c */

/* The calling thread's worker record if it works for `pool`, else NULL. */
/* sched.c: the calling thread's worker record, if it is a pool's worker. */
extern CREW__TLS crew__worker *crew__pool_me;

static inline crew__worker *crew__pool_self(const crew_pool *pool) {
    crew__worker *w = crew__pool_me;
    return w && w->pool == pool ? w : NULL;
}

/* Queue a task: on the caller's own deque when it is one of the pool's
 * workers, else on the injector; then wake a worker if none is looking.
 * CREW_ENOMEM when a deque or the injector cannot grow. */
int crew__pool_push(crew_pool *pool, crew__task *t);

/* Run tasks until ready(arg) holds (0) or the deadline passes
 * (CREW_ETIMEDOUT): the waiting loop of a worker in a nested wait. */
int crew__pool_help(crew__worker *w, bool (*ready)(void *), void *arg, const crew__deadline *d);

/* Wake up to n more sleeping workers: work that will soon split into that
 * many pieces was just queued (a loop's root), so their wake-ups overlap
 * instead of following one another as each splits. */
void crew__pool_wake_more(crew_pool *pool, size_t n);

/* Something a helper may wait for has completed: wake helpers that sleep. */
void crew__pool_notify(crew_pool *pool);

/* Run one task as the current task of worker w (saving and restoring the
 * thread's task index). */
void crew__pool_run(crew__worker *w, crew__task *t);

/* Whether the calling thread runs one of the pool's tasks: a worker, or a
 * thread outside running a group's task at once (crew__pool_run_guest). */
bool crew__pool_inside(const crew_pool *pool);

/* Run a group's fn(arg) at once in a thread that is not one of the pool's
 * workers, as one of its tasks (crew_pool_current gives the pool; no item
 * index). Returns fn's code (a positive one as CREW_EINVAL). */
int crew__pool_run_guest(crew_pool *pool, crew_group_fn fn, void *arg);

/* Start the worker threads (pool fields set); 0 or CREW_EAGAIN/ENOMEM. */
int crew__pool_start_workers(crew_pool *pool);
/* Wake every sleeper (stop, terminate). */
void crew__pool_wake_all(crew_pool *pool);
/* Pop everything from the injector (terminate); returns how many into
 * *out (malloc'd, caller frees), or 0. */
size_t crew__pool_drain_injector(crew_pool *pool, crew__task ***out);

/* The task index seen by crew_pool_task_index (SIZE_MAX outside a task). */
extern CREW__TLS size_t crew__pool_index;

/* A one-shot completion flag that a worker may wait on by helping, and an
 * outside thread by sleeping on it (the futex word itself). */
typedef struct crew__latch {
    _Atomic uint32_t state;     /* 0 unset, 1 set, 2 unset with an outside sleeper */
} crew__latch;

void crew__latch_set(crew_pool *pool, crew__latch *l);
/* Wait for the latch: helping when the caller is a worker of pool. */
void crew__latch_wait(crew_pool *pool, crew__latch *l);
static inline bool crew__latch_is_set(crew__latch *l) { return atomic_load(&l->state) == 1; }

/* ------------------------------------------------------------- pool.c */

/* A single writer's counter (a worker's accepted/completed): a plain
 * increment, published with release. */
static inline void crew__bump(_Atomic size_t *c) {
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + 1, memory_order_release);
}

/* Accept a unit of outside work: CREW_ESHUTDOWN after close (unless the
 * caller is one of the pool's workers, whose work was accepted already),
 * CREW_ECHILD in another process. On 0 the caller must crew__pool_done it. */
int crew__pool_accept(crew_pool *pool);
void crew__pool_done(crew_pool *pool);
/* Count an acceptance without checks (an imap refill, under state_lock). */
void crew__pool_count(crew_pool *pool);
/* Whether no accepted unit is outstanding (see `ext_accepted`). */
bool crew__pool_quiet(crew_pool *pool);
/* Wake joiners if any (a worker about to sleep, an outside completion). */
void crew__pool_wake_joiners(crew_pool *pool);

/* -------------------------------------------------------------- proc.c */

typedef struct crew__mailbox crew__mailbox;
/* Set up the arena and the workers' mailboxes (before any child exists). */
int crew__proc_setup(crew_pool *pool);
void crew__proc_release(crew_pool *pool);
/* In worker w's thread: start its child (0, or the initializer's code). */
int crew__proc_start_child(crew__worker *w);
/* In worker w's thread: ask its child to exit and reap it. */
void crew__proc_stop_child(crew__worker *w);
/* SIGKILL every child (terminate). */
void crew__proc_kill_children(crew_pool *pool);
/* True in a child process of `pool`: calls on the pool run inline there. */
/* proc.c: in a process pool's child, the pool it works for; else NULL. */
extern crew_pool *crew__proc_child_of;

static inline bool crew__proc_child(const crew_pool *pool) {
    return crew__proc_child_of != NULL && crew__proc_child_of == pool;
}
/* The pool whose child process this is, or NULL. */
crew_pool *crew__proc_child_pool(void);
/* In a new child: forget the parent's thread state (sched.c). */
void crew__pool_child_enter(crew_pool *pool);

/* ------------------------------------------------------------- group.c */

/* A worker's credit on a group (group.c): the group it holds credit for,
 * or NULL. */
extern CREW__TLS crew_group *crew__group_stash;
/* Give the calling worker's credit back to its group. Called before a
 * worker runs anything but a task of that group, when it finds no work,
 * before it waits on a group, and when a wait (crew__pool_help) or a
 * loop's join returns. */
void crew__group_flush(void);
/* The run function of a group's task. */
void crew__group_task_run(crew__task *task, crew__worker *w);

/* ---------------------------------------------------------- progress.c */

typedef struct crew__progress {
    crew_progress_fn fn;
    void *arg;
    _Atomic size_t total;
    _Atomic size_t done;
    _Atomic int busy;           /* a report is being made */
    size_t reported;            /* the last done reported (under busy) */
    bool final_sent;            /* done == total was reported (under busy) */
} crew__progress;

void crew__progress_init(crew__progress *p, crew_progress_fn fn, void *arg, size_t total);
/* n more items are done; reports when no other report is being made, and
 * always the final one (done == total). */
void crew__progress_add(crew__progress *p, size_t n);

#endif
