/* Stress for sync.h: many threads (and, for CREW_SHARED objects, processes)
 * hammer each primitive, and every run ends with a conservation check:
 * counters exact, every produced item consumed once, every barrier index
 * handed out once per cycle, every ping answered.
 *
 * Work is scaled by CREW_STRESS_SCALE (test_scaled). Thread bodies never call
 * cmocka; they count errors, which the test asserts are zero after joining.
 * Every blocking call has a long timeout, so a lost wake-up shows up as an
 * error count rather than a hang. Shared data guarded by the primitive under
 * test is plain (not atomic), so ThreadSanitizer checks that the primitive
 * orders it. */
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "crew/clock.h"
#include "crew/error.h"
#include "crew/sync.h"
#include "crew/thread.h"
#include "test_util.h"

#define NTHREADS 8
#define WAIT 60.0 /* per blocking call: a hang becomes an error */

typedef int (*body_fn)(void *arg);

/* Start n threads running fn(arg + i * stride), join them all, and assert
 * each returned 0 (its error count). */
static void run_threads(int n, body_fn fn, void *arg, size_t stride) {
    crew_thread *ts[64];
    assert_true(n <= 64);
    for (int i = 0; i < n; i++)
        assert_int_equal(crew_thread_start(&ts[i], fn, (char *)arg + (size_t)i * stride, NULL), 0);
    for (int i = 0; i < n; i++) {
        int result = -1;
        assert_int_equal(crew_thread_join(ts[i], CREW_FOREVER, &result), 0);
        if (result != 0)
            fail_msg("thread %d reported %d errors", i, result);
        crew_thread_free(ts[i]);
    }
}

/* ------------------------------------------------------- mutual exclusion */

enum guard_kind { G_LOCK, G_RLOCK, G_SEM, G_COND };

typedef struct guard_shared {
    enum guard_kind kind;
    crew_lock lock;
    crew_rlock rlock;
    crew_sem sem;
    crew_cond cond;
    long counter;            /* plain: guarded by the primitive */
    atomic_int inside;       /* relaxed: catches two holders at once */
    long iters;
} guard_shared;

typedef struct guard_arg {
    guard_shared *s;
    int index;
} guard_arg;

/* Acquire with one of three timeout styles, so the try, timed and forever
 * paths all see contention. Returns 0 once acquired, else an error. */
static int acquire_styled(guard_shared *s, int style) {
    for (;;) {
        double timeout = style == 0 ? WAIT : style == 1 ? 0 : 0.001;
        int rc;
        switch (s->kind) {
        case G_LOCK: rc = crew_lock_acquire(&s->lock, timeout); break;
        case G_RLOCK: rc = crew_rlock_acquire(&s->rlock, timeout); break;
        case G_SEM: rc = crew_sem_acquire(&s->sem, timeout); break;
        default: rc = crew_cond_acquire(&s->cond, timeout); break;
        }
        if (rc == 0)
            return 0;
        if (style == 1 && rc == CREW_EBUSY) {
            sched_yield();
            continue;
        }
        if (style == 2 && rc == CREW_ETIMEDOUT)
            continue;
        return rc;
    }
}

static int release_guard(guard_shared *s) {
    switch (s->kind) {
    case G_LOCK: return crew_lock_release(&s->lock);
    case G_RLOCK: return crew_rlock_release(&s->rlock);
    case G_SEM: return crew_sem_release(&s->sem, 1);
    default: return crew_cond_release(&s->cond);
    }
}

static int guard_body(void *arg) {
    guard_arg *a = arg;
    guard_shared *s = a->s;
    int errors = 0;
    int style = a->index % 3;
    for (long i = 0; i < s->iters; i++) {
        if (acquire_styled(s, style) != 0) {
            errors++;
            continue;
        }
        if (s->kind == G_RLOCK) {
            /* Re-entry: the holder gets it again at once, even with 0. */
            if (crew_rlock_acquire(&s->rlock, 0) != 0)
                errors++;
            if (!crew_rlock_owned(&s->rlock))
                errors++;
        }
        if (atomic_fetch_add_explicit(&s->inside, 1, memory_order_relaxed) != 0)
            errors++;
        s->counter++;
        atomic_fetch_sub_explicit(&s->inside, 1, memory_order_relaxed);
        if (s->kind == G_RLOCK) {
            if (crew_rlock_release(&s->rlock) != 0)
                errors++;
            if (!crew_rlock_owned(&s->rlock))
                errors++;
        }
        if (release_guard(s) != 0)
            errors++;
        if (s->kind == G_RLOCK && crew_rlock_owned(&s->rlock))
            errors++;
    }
    return errors;
}

static void run_guard(enum guard_kind kind) {
    guard_shared *s = calloc(1, sizeof *s);
    assert_non_null(s);
    s->kind = kind;
    s->iters = test_scaled(kind == G_LOCK ? 1000000 : 400000);
    atomic_init(&s->inside, 0);
    switch (kind) {
    case G_LOCK: assert_int_equal(crew_lock_init(&s->lock, 0), 0); break;
    case G_RLOCK: assert_int_equal(crew_rlock_init(&s->rlock, 0), 0); break;
    case G_SEM: assert_int_equal(crew_sem_init_bounded(&s->sem, 1, 0), 0); break;
    case G_COND: assert_int_equal(crew_cond_init(&s->cond, NULL, 0), 0); break;
    }
    guard_arg args[NTHREADS];
    for (int i = 0; i < NTHREADS; i++)
        args[i] = (guard_arg){ .s = s, .index = i };
    run_threads(NTHREADS, guard_body, args, sizeof args[0]);
    assert_int_equal(s->counter, NTHREADS * s->iters);
    switch (kind) {
    case G_LOCK:
        assert_false(crew_lock_locked(&s->lock));
        assert_int_equal(crew_lock_destroy(&s->lock), 0);
        break;
    case G_RLOCK: assert_int_equal(crew_rlock_destroy(&s->rlock), 0); break;
    case G_SEM:
        assert_int_equal(crew_sem_value(&s->sem), 1);
        assert_int_equal(crew_sem_destroy(&s->sem), 0);
        break;
    case G_COND: assert_int_equal(crew_cond_destroy(&s->cond), 0); break;
    }
    free(s);
}

static void stress_lock_counter(void **state) {
    (void)state;
    run_guard(G_LOCK);
}

static void stress_rlock_counter(void **state) {
    (void)state;
    run_guard(G_RLOCK);
}

static void stress_sem_mutex_counter(void **state) {
    (void)state;
    run_guard(G_SEM);
}

static void stress_cond_lock_counter(void **state) {
    (void)state;
    run_guard(G_COND);
}

/* ------------------------------------------- producers/consumers over sems */

#define RING 8
#define NPROD 4
#define NCONS 4

typedef struct sem_pc {
    crew_sem empty;          /* bounded at RING: free slots */
    crew_sem full;           /* filled slots */
    crew_lock ring_lock;     /* guards ring, head, tail */
    long ring[RING];
    unsigned head, tail;
    long per_producer;       /* items each producer puts */
    long per_consumer;       /* items each consumer takes */
} sem_pc;

typedef struct pc_arg {
    sem_pc *q;
    int index;
    long sum;                /* produced or consumed */
    long count;
} pc_arg;

static int sem_producer(void *arg) {
    pc_arg *a = arg;
    sem_pc *q = a->q;
    int errors = 0;
    long next = 0;
    while (next < q->per_producer) {
        /* Batches of 1..3 released at once exercise release(n > 1). */
        long batch = 1 + (next + a->index) % 3;
        if (batch > q->per_producer - next)
            batch = q->per_producer - next;
        for (long k = 0; k < batch; k++)
            if (crew_sem_acquire(&q->empty, WAIT) != 0)
                return errors + 1;
        if (crew_lock_acquire(&q->ring_lock, WAIT) != 0)
            return errors + 1;
        for (long k = 0; k < batch; k++) {
            long item = (long)a->index * 1000003L + next + k + 1;
            q->ring[q->tail % RING] = item;
            q->tail++;
            a->sum += item;
            a->count++;
        }
        if (crew_lock_release(&q->ring_lock) != 0)
            errors++;
        if (crew_sem_release(&q->full, (unsigned)batch) != 0)
            errors++;
        next += batch;
    }
    return errors;
}

static int sem_consumer(void *arg) {
    pc_arg *a = arg;
    sem_pc *q = a->q;
    int errors = 0;
    for (long i = 0; i < q->per_consumer; i++) {
        if (crew_sem_acquire(&q->full, WAIT) != 0)
            return errors + 1;
        if (crew_lock_acquire(&q->ring_lock, WAIT) != 0)
            return errors + 1;
        if (q->head == q->tail)
            errors++; /* the semaphore promised an item */
        long item = q->ring[q->head % RING];
        q->head++;
        if (crew_lock_release(&q->ring_lock) != 0)
            errors++;
        /* Bounded: a release past RING means a slot was counted twice. */
        if (crew_sem_release(&q->empty, 1) != 0)
            errors++;
        if (item <= 0)
            errors++;
        a->sum += item;
        a->count++;
    }
    return errors;
}

typedef struct pc_any {
    pc_arg arg;
    int producer;
} pc_any;

static int pc_dispatch(void *arg) {
    pc_any *x = arg;
    return x->producer ? sem_producer(&x->arg) : sem_consumer(&x->arg);
}

static void stress_sem_producer_consumer(void **state) {
    (void)state;
    sem_pc *q = calloc(1, sizeof *q);
    assert_non_null(q);
    q->per_producer = test_scaled(400000);
    q->per_consumer = q->per_producer * NPROD / NCONS;
    assert_int_equal(crew_sem_init_bounded(&q->empty, RING, 0), 0);
    assert_int_equal(crew_sem_init(&q->full, 0, 0), 0);
    assert_int_equal(crew_lock_init(&q->ring_lock, 0), 0);

    pc_any xs[NPROD + NCONS];
    memset(xs, 0, sizeof xs);
    for (int i = 0; i < NPROD + NCONS; i++) {
        xs[i].producer = i % 2 == 0; /* interleave start order */
        xs[i].arg.q = q;
        xs[i].arg.index = i;
    }
    run_threads(NPROD + NCONS, pc_dispatch, xs, sizeof xs[0]);

    long produced = 0, consumed = 0, n_produced = 0, n_consumed = 0;
    for (int i = 0; i < NPROD + NCONS; i++) {
        if (xs[i].producer) {
            produced += xs[i].arg.sum;
            n_produced += xs[i].arg.count;
        } else {
            consumed += xs[i].arg.sum;
            n_consumed += xs[i].arg.count;
        }
    }
    assert_int_equal(n_produced, NPROD * q->per_producer);
    assert_int_equal(n_consumed, n_produced);
    assert_int_equal(consumed, produced);
    assert_int_equal(q->head, q->tail);
    assert_int_equal(crew_sem_value(&q->empty), RING);
    assert_int_equal(crew_sem_value(&q->full), 0);
    assert_int_equal(crew_sem_destroy(&q->empty), 0);
    assert_int_equal(crew_sem_destroy(&q->full), 0);
    assert_int_equal(crew_lock_destroy(&q->ring_lock), 0);
    free(q);
}

/* ------------------------------------ producers/consumers over conditions */

typedef struct cond_pc {
    bool use_rlock;          /* conditions over rlock, held twice */
    crew_lock lock;          /* guards everything below (or rlock does) */
    crew_rlock rlock;
    crew_cond not_full;      /* over lock or rlock */
    crew_cond not_empty;     /* over lock or rlock */
    long ring[RING];
    unsigned count, head;
    long per_producer, per_consumer;
} cond_pc;

typedef struct cpc_arg {
    cond_pc *q;
    int index;
    int producer;
    long sum, count;
} cpc_arg;

static bool has_room(void *arg) {
    cond_pc *q = arg;
    return q->count < RING;
}

static bool has_item(void *arg) {
    cond_pc *q = arg;
    return q->count > 0;
}

static int cond_pc_body(void *arg) {
    cpc_arg *a = arg;
    cond_pc *q = a->q;
    int errors = 0;
    long n = a->producer ? q->per_producer : q->per_consumer;
    for (long i = 0; i < n; i++) {
        if (q->use_rlock) {
            /* Two levels: wait must release both and restore both. */
            if (crew_rlock_acquire(&q->rlock, WAIT) != 0 || crew_rlock_acquire(&q->rlock, WAIT) != 0)
                return errors + 1;
        } else if (crew_lock_acquire(&q->lock, WAIT) != 0) {
            return errors + 1;
        }
        /* Mostly wake one; sometimes everyone (the rest re-check). */
        bool all = i % 8 == 7;
        if (a->producer) {
            /* Alternate the predicate helper and a hand-written wait loop. */
            if (i % 2 == 0) {
                if (crew_cond_wait_for(&q->not_full, has_room, q, WAIT) != 0)
                    errors++;
            } else {
                while (q->count >= RING)
                    if (crew_cond_wait(&q->not_full, WAIT) != 0) {
                        errors++;
                        break;
                    }
            }
            if (q->count < RING) {
                long item = (long)a->index * 1000003L + i + 1;
                q->ring[(q->head + q->count) % RING] = item;
                q->count++;
                a->sum += item;
                a->count++;
            }
            if ((all ? crew_cond_notify_all(&q->not_empty) : crew_cond_notify(&q->not_empty, 1)) != 0)
                errors++;
        } else {
            if (i % 2 == 0) {
                if (crew_cond_wait_for(&q->not_empty, has_item, q, WAIT) != 0)
                    errors++;
            } else {
                while (q->count == 0)
                    if (crew_cond_wait(&q->not_empty, WAIT) != 0) {
                        errors++;
                        break;
                    }
            }
            if (q->count > 0) {
                a->sum += q->ring[q->head];
                a->count++;
                q->head = (q->head + 1) % RING;
                q->count--;
            }
            if ((all ? crew_cond_notify_all(&q->not_full) : crew_cond_notify(&q->not_full, 1)) != 0)
                errors++;
        }
        if (q->use_rlock) {
            if (!crew_rlock_owned(&q->rlock))
                errors++;
            if (crew_rlock_release(&q->rlock) != 0 || crew_rlock_release(&q->rlock) != 0)
                errors++;
        } else if (crew_lock_release(&q->lock) != 0) {
            errors++;
        }
    }
    return errors;
}

static void run_cond_producer_consumer(bool use_rlock) {
    cond_pc *q = calloc(1, sizeof *q);
    assert_non_null(q);
    q->use_rlock = use_rlock;
    q->per_producer = test_scaled(100000);
    q->per_consumer = q->per_producer * NPROD / NCONS;
    if (use_rlock) {
        assert_int_equal(crew_rlock_init(&q->rlock, 0), 0);
        assert_int_equal(crew_cond_init_rlock(&q->not_full, &q->rlock, 0), 0);
        assert_int_equal(crew_cond_init_rlock(&q->not_empty, &q->rlock, 0), 0);
    } else {
        assert_int_equal(crew_lock_init(&q->lock, 0), 0);
        assert_int_equal(crew_cond_init(&q->not_full, &q->lock, 0), 0);
        assert_int_equal(crew_cond_init(&q->not_empty, &q->lock, 0), 0);
    }

    cpc_arg xs[NPROD + NCONS];
    memset(xs, 0, sizeof xs);
    for (int i = 0; i < NPROD + NCONS; i++) {
        xs[i].q = q;
        xs[i].index = i;
        xs[i].producer = i % 2;
    }
    run_threads(NPROD + NCONS, cond_pc_body, xs, sizeof xs[0]);

    long produced = 0, consumed = 0, n_produced = 0, n_consumed = 0;
    for (int i = 0; i < NPROD + NCONS; i++) {
        if (xs[i].producer) {
            produced += xs[i].sum;
            n_produced += xs[i].count;
        } else {
            consumed += xs[i].sum;
            n_consumed += xs[i].count;
        }
    }
    assert_int_equal(n_produced, NPROD * q->per_producer);
    assert_int_equal(n_consumed, n_produced);
    assert_int_equal(consumed, produced);
    assert_int_equal(q->count, 0);
    assert_int_equal(crew_cond_destroy(&q->not_full), 0);
    assert_int_equal(crew_cond_destroy(&q->not_empty), 0);
    if (use_rlock)
        assert_int_equal(crew_rlock_destroy(&q->rlock), 0);
    else
        assert_int_equal(crew_lock_destroy(&q->lock), 0);
    free(q);
}

static void stress_cond_producer_consumer(void **state) {
    (void)state;
    run_cond_producer_consumer(false);
}

static void stress_cond_rlock_producer_consumer(void **state) {
    (void)state;
    run_cond_producer_consumer(true);
}

/* ----------------------------------------------------------------- barrier */

typedef struct barrier_run {
    crew_barrier barrier;
    long rounds;
    atomic_int *seen;        /* rounds x NTHREADS: arrival indices handed out */
    long (*data)[NTHREADS];  /* [2][NTHREADS], plain: ordered by the barrier */
    long actions;            /* written by the action only */
} barrier_run;

typedef struct barrier_arg {
    barrier_run *b;
    int me;
} barrier_arg;

static int barrier_action(void *arg) {
    barrier_run *b = arg;
    b->actions++;
    return 0;
}

static int barrier_body(void *arg) {
    barrier_arg *a = arg;
    barrier_run *b = a->b;
    int errors = 0;
    for (long r = 0; r < b->rounds; r++) {
        b->data[r % 2][a->me] = r * NTHREADS + a->me;
        int idx = crew_barrier_wait(&b->barrier, WAIT);
        if (idx < 0 || idx >= NTHREADS)
            return errors + 1;
        atomic_fetch_add(&b->seen[r * NTHREADS + idx], 1);
        /* Everyone's write for this round happened before the barrier; the
         * next write to this half comes after the next barrier. */
        for (int j = 0; j < NTHREADS; j++)
            if (b->data[r % 2][j] != r * NTHREADS + j)
                errors++;
    }
    return errors;
}

static void stress_barrier_cycles(void **state) {
    (void)state;
    barrier_run *b = calloc(1, sizeof *b);
    assert_non_null(b);
    b->rounds = test_scaled(40000);
    b->seen = calloc((size_t)b->rounds * NTHREADS, sizeof *b->seen);
    b->data = calloc(2, sizeof *b->data);
    assert_non_null(b->seen);
    assert_non_null(b->data);
    assert_int_equal(crew_barrier_init(&b->barrier, NTHREADS,
                                       &(crew_barrier_options){ .action = barrier_action,
                                                                .arg = b }),
                     0);
    barrier_arg args[NTHREADS];
    for (int i = 0; i < NTHREADS; i++)
        args[i] = (barrier_arg){ .b = b, .me = i };
    run_threads(NTHREADS, barrier_body, args, sizeof args[0]);

    for (long r = 0; r < b->rounds; r++)
        for (int i = 0; i < NTHREADS; i++)
            if (atomic_load(&b->seen[r * NTHREADS + i]) != 1)
                fail_msg("round %ld: index %d handed out %d times", r, i,
                         atomic_load(&b->seen[r * NTHREADS + i]));
    assert_int_equal(b->actions, b->rounds);
    assert_false(crew_barrier_broken(&b->barrier));
    assert_int_equal(crew_barrier_n_waiting(&b->barrier), 0);
    assert_int_equal(crew_barrier_destroy(&b->barrier), 0);
    free(b->seen);
    free(b->data);
    free(b);
}

/* -------------------------------------------------------- event ping-pong */

#define NPAIRS (NTHREADS / 2)

typedef struct pingpong {
    crew_event ping, pong;
    long ball;               /* plain: handed over by the events */
    long rounds;
    long returned;           /* answers the pinger saw */
} pingpong;

typedef struct pp_arg {
    pingpong *p;
    int pinger;
} pp_arg;

static int pingpong_body(void *arg) {
    pp_arg *a = arg;
    pingpong *p = a->p;
    int errors = 0;
    for (long i = 0; i < p->rounds; i++) {
        if (a->pinger) {
            p->ball = 2 * i;
            if (crew_event_set(&p->ping) != 0)
                errors++;
            if (crew_event_wait(&p->pong, WAIT) != 0)
                return errors + 1;
            if (crew_event_clear(&p->pong) != 0)
                errors++;
            if (p->ball != 2 * i + 1)
                errors++;
            else
                p->returned++;
        } else {
            if (crew_event_wait(&p->ping, WAIT) != 0)
                return errors + 1;
            if (crew_event_clear(&p->ping) != 0)
                errors++;
            if (p->ball != 2 * i)
                errors++;
            p->ball = 2 * i + 1;
            if (crew_event_set(&p->pong) != 0)
                errors++;
        }
    }
    return errors;
}

static void stress_event_pingpong(void **state) {
    (void)state;
    pingpong *ps = calloc(NPAIRS, sizeof *ps);
    assert_non_null(ps);
    pp_arg args[NTHREADS];
    for (int k = 0; k < NPAIRS; k++) {
        assert_int_equal(crew_event_init(&ps[k].ping, 0), 0);
        assert_int_equal(crew_event_init(&ps[k].pong, 0), 0);
        ps[k].rounds = test_scaled(100000);
        args[2 * k] = (pp_arg){ .p = &ps[k], .pinger = 1 };
        args[2 * k + 1] = (pp_arg){ .p = &ps[k], .pinger = 0 };
    }
    run_threads(NTHREADS, pingpong_body, args, sizeof args[0]);
    for (int k = 0; k < NPAIRS; k++) {
        assert_int_equal(ps[k].returned, ps[k].rounds);
        assert_false(crew_event_is_set(&ps[k].ping));
        assert_false(crew_event_is_set(&ps[k].pong));
        assert_int_equal(crew_event_destroy(&ps[k].ping), 0);
        assert_int_equal(crew_event_destroy(&ps[k].pong), 0);
    }
    free(ps);
}

/* ------------------------------------------- shared objects, 4 processes */

#define NPROCS 4

typedef struct shared_page {
    crew_lock lock;
    crew_sem sem;            /* value 1: a mutex */
    crew_barrier barrier;
    long lock_counter;       /* guarded by lock */
    long sem_counter;        /* guarded by sem */
    atomic_int inside;
    atomic_int seen[];       /* rounds x NPROCS barrier indices */
} shared_page;

static int shared_child(shared_page *sp, long iters, long rounds) {
    int errors = 0;
    for (long i = 0; i < iters; i++) {
        if (crew_lock_acquire(&sp->lock, WAIT) != 0) {
            errors++;
            continue;
        }
        if (atomic_fetch_add(&sp->inside, 1) != 0)
            errors++;
        sp->lock_counter++;
        atomic_fetch_sub(&sp->inside, 1);
        if (crew_lock_release(&sp->lock) != 0)
            errors++;
    }
    for (long i = 0; i < iters; i++) {
        if (crew_sem_acquire(&sp->sem, WAIT) != 0) {
            errors++;
            continue;
        }
        sp->sem_counter++;
        if (crew_sem_release(&sp->sem, 1) != 0)
            errors++;
    }
    for (long r = 0; r < rounds; r++) {
        int idx = crew_barrier_wait(&sp->barrier, WAIT);
        if (idx < 0 || idx >= NPROCS)
            return errors + 1;
        atomic_fetch_add(&sp->seen[r * NPROCS + idx], 1);
    }
    return errors;
}

static void stress_shared_processes(void **state) {
    (void)state;
    long iters = test_scaled(200000);
    long rounds = test_scaled(20000);
    size_t size = sizeof(shared_page) + (size_t)rounds * NPROCS * sizeof(atomic_int);
    shared_page *sp = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    assert_true(sp != MAP_FAILED);
    assert_int_equal(crew_lock_init(&sp->lock, CREW_SHARED), 0);
    assert_int_equal(crew_sem_init(&sp->sem, 1, CREW_SHARED), 0);
    assert_int_equal(crew_barrier_init(&sp->barrier, NPROCS,
                                       &(crew_barrier_options){ .flags = CREW_SHARED }),
                     0);

    fflush(NULL);
    pid_t pids[NPROCS];
    for (int i = 0; i < NPROCS; i++) {
        pids[i] = fork();
        assert_true(pids[i] >= 0);
        if (pids[i] == 0) {
            int errors = shared_child(sp, iters, rounds);
            _exit(errors == 0 ? 0 : 1);
        }
    }
    int failed = 0;
    for (int i = 0; i < NPROCS; i++) {
        int status = 0;
        assert_int_equal(waitpid(pids[i], &status, 0), pids[i]);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
            failed++;
    }
    assert_int_equal(failed, 0);
    assert_int_equal(sp->lock_counter, NPROCS * iters);
    assert_int_equal(sp->sem_counter, NPROCS * iters);
    for (long r = 0; r < rounds; r++)
        for (int i = 0; i < NPROCS; i++)
            if (atomic_load(&sp->seen[r * NPROCS + i]) != 1)
                fail_msg("round %ld: index %d handed out %d times", r, i,
                         atomic_load(&sp->seen[r * NPROCS + i]));
    assert_false(crew_lock_locked(&sp->lock));
    assert_int_equal(crew_sem_value(&sp->sem), 1);
    assert_int_equal(crew_lock_destroy(&sp->lock), 0);
    assert_int_equal(crew_sem_destroy(&sp->sem), 0);
    assert_int_equal(crew_barrier_destroy(&sp->barrier), 0);
    assert_int_equal(munmap(sp, size), 0);
}

/* Print each test's time, so scaling can be tuned against the CI budget. */
static int timed_setup(void **state) {
    double *t0 = malloc(sizeof *t0);
    if (!t0)
        return -1;
    *t0 = test_now();
    *state = t0;
    return 0;
}

static int timed_teardown(void **state) {
    double *t0 = *state;
    printf("  (%.2f s)\n", test_now() - *t0);
    free(t0);
    return 0;
}

#define S(fn) cmocka_unit_test_setup_teardown(fn, timed_setup, timed_teardown)

int main(void) {
    const struct CMUnitTest tests[] = {
        S(stress_shared_processes), /* first: fork while single-threaded */
        S(stress_lock_counter),
        S(stress_rlock_counter),
        S(stress_sem_mutex_counter),
        S(stress_cond_lock_counter),
        S(stress_sem_producer_consumer),
        S(stress_cond_producer_consumer),
        S(stress_cond_rlock_producer_consumer),
        S(stress_barrier_cycles),
        S(stress_event_pingpong),
    };
    printf("stress scale %.2f\n", test_scale());
    return cmocka_run_group_tests(tests, NULL, NULL);
}
