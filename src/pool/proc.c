/* Running the user's code: here (thread pools), or in a worker's child
 * process (process pools).
 *
 * A process pool is a thread pool whose worker threads do not run user code
 * themselves: each worker thread owns one child process (started with
 * crew_process_start, whose long-lived forker thread does the fork, so the
 * children's PR_SET_PDEATHSIG fires only when this process ends) and ships
 * every crew__call to it. All scheduling, futures, callbacks and progress
 * stay in the parent.
 *
 * The worker thread and its child talk through a `mailbox` in the shared
 * arena (mapped before any child is forked, so it is at the same address in
 * both). Inputs that do not already lie in the arena are copied into the
 * mailbox's stage, and outputs copied back; a map whose arrays lie in the
 * arena moves no data. Protocol, one call at a time:
 *   parent: writes `call`, then req++ (seq_cst), wakes the child if it
 *           sleeps (child_sleeps);
 *   child:  waits for req to change, runs the call, counting finished items
 *           in call.ran, stores rc, then done = req (release), and rings
 *           the parent's `bell` (an eventfd) if it sleeps (parent_sleeps).
 * Both sides spin briefly before sleeping, announcing it in their *_sleeps
 * word first and looking again (the Dekker pattern). The child sleeps on
 * the futex word `req`; the parent in poll() on its bell and the child's
 * pidfd, so a child's death wakes it at once.
 *
 * When the child has died (the pidfd says so; without pidfds a 20 ms poll
 * looks) after it picked the call up (`taken`), the items before call.ran are done and the item
 * at call.ran is the one it held: that item (or, for a for/reduce piece, the
 * whole piece) is retried on a new child up to `retries` times, then fails
 * with CREW_EWORKERDIED; the rest of the call goes on on the new child. A
 * child that died idle, before taking the call, is replaced and the call
 * posted to the new one: it ran nothing.
 */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "crew/clock.h"
#include "crew/error.h"
#include "crew/process.h"
#include "crew/shm.h"
#include "futex.h"
#include "pool/call.h"
#include "pool/pool_internal.h"

/* ---------------------------------------------------------- running here */

static bool stopped(const crew__call *c) {
    return (c->stop && atomic_load_explicit(c->stop, memory_order_relaxed)) ||
           (c->stop2 && atomic_load_explicit(c->stop2, memory_order_relaxed));
}

static int code(int rc) { return rc > 0 ? CREW_EINVAL : rc; }

int crew__call_exec(crew__call *c) {
    switch (c->op) {
    case CREW__CALL_FOR:
        return code(c->for_body(c->b, c->e, c->ctx));
    case CREW__CALL_REDUCE:
        return code(c->red_body(c->b, c->e, c->acc, c->ctx));
    default:
        break;
    }
    /* The call's fields in locals (fn may write anywhere, so the compiler
     * would reload them around every call); c->ran is still stored after
     * each item: a process pool's parent reads it when the child dies. */
    const size_t n = c->n, first = c->first, in_size = c->in_size, out_size = c->out_size;
    const char *in = c->in;
    char *out = c->out;
    const crew_task_fn fn = c->fn;
    void *const ctx = c->ctx;
    int *const rcs = c->keep_going ? c->rcs : NULL;
    const bool check = c->stop || c->stop2;
    for (size_t j = c->ran; j < n; j++) {
        if (check && stopped(c)) return 0;
        crew__pool_index = first + j;
        int rc = code(fn(in_size ? in + j * in_size : in, out_size ? out + j * out_size : out, ctx));
        if (rcs) {
            rcs[j] = rc;
        } else if (rc != 0) {
            return rc;
        }
        c->ran = j + 1;
    }
    return 0;
}

/* ---------------------------------------------------------------- mailbox */

struct crew__mailbox {
    _Atomic uint32_t req;           /* parent: bumps to post a call (futex) */
    _Atomic uint32_t done;          /* child: = req when the call is done (futex) */
    _Atomic uint32_t child_sleeps;
    _Atomic uint32_t parent_sleeps;
    _Atomic uint32_t ready;         /* child: 1 once its initializer ran (futex) */
    _Atomic uint32_t taken;         /* child: the last req it picked up */
    int bell;                       /* eventfd the child writes when the parent sleeps */
    _Atomic int quit;               /* parent: the next post means "exit" */
    int init_rc;                    /* the child's initializer result */
    int rc;                         /* the call's result */
    bool recycling;                 /* the child exits after this call */
    crew__call call;                /* pointers into the arena */
    size_t stage_size;
    unsigned char *stage;           /* arena; grown by the parent */
};

/* Set in a process pool's child: the pool it works for. */
crew_pool *crew__proc_child_of;

size_t crew_pool_worker_deaths(const crew_pool *pool, int *last) {
    if (!pool) return 0;
    size_t n = atomic_load(&((crew_pool *)pool)->worker_deaths);
    if (n && last) *last = atomic_load(&((crew_pool *)pool)->last_death);
    return n;
}

crew_pool *crew__proc_child_pool(void) { return crew__proc_child_of; }

static size_t align16(size_t n) { return (n + 15) & ~(size_t)15; }

/* ------------------------------------------------------------------ child */

/* How each side waits for the other (the child for the next call, the
 * parent for a call's end): a few quick polls, then polls for up to
 * POLL_NS, then sleep. POLL_NS is longer than the gap between two calls of
 * one map (the parent copies results out and the next inputs in) and than
 * a short call, so a busy map's round trips never sleep; an idle pool
 * sleeps after POLL_NS.
 *
 * Whether a poll yields the CPU is a trade measured with bench_proc on 2
 * cores, where the parent's threads and the children outnumber the cores:
 *  - the parent yields at every poll: the child it waits for is running
 *    the call and may need this core;
 *  - the child polls without yielding for CHILD_SPIN_NS first: the next
 *    call of a caller that submits and waits one task at a time comes a
 *    few microseconds later, and yielding then costs the round trip
 *    several context switches (one-at-a-time latency 20-30 us instead of
 *    4-5 us); after that it yields, so a child kept waiting does not hold
 *    up the parent's threads. */
enum { SPIN = 64 };
#define POLL_NS (200 * 1000)
#define CHILD_SPIN_NS (20 * 1000)

/* The poll loop: false while polling should go on, true when it is time to
 * sleep. `since` is 0 on the first call; polls during the first spin_ns
 * do not yield. */
static bool poll_expired(int spin, int64_t *since, int64_t spin_ns) {
    if (spin < SPIN) {
        crew__cpu_relax();
        return false;
    }
    int64_t now = crew__now_ns();
    if (*since == 0) *since = now;
    if (now - *since >= POLL_NS) return true;
    if (now - *since < spin_ns) {
        for (int k = 0; k < 16; k++) crew__cpu_relax();
    } else {
        sched_yield();
    }
    return false;
}

static int child_main(void *arg) {
    crew__worker *w = arg;
    crew_pool *pool = w->pool;
    crew__mailbox *mb = w->mb;
    crew__pool_child_enter(pool);
    crew__proc_child_of = pool;
    int rc = pool->initializer ? pool->initializer(pool->initarg) : 0;
    mb->init_rc = rc > 0 ? CREW_EINVAL : rc;
    uint32_t seen = atomic_load(&mb->req);
    atomic_store(&mb->ready, 1);
    crew__futex_wake(&mb->ready, INT_MAX, true);
    if (rc != 0) return 1;
    size_t calls = 0;
    for (;;) {
        uint32_t r;
        int64_t since = 0;
        for (int spin = 0; (r = atomic_load(&mb->req)) == seen; spin++) {
            if (!poll_expired(spin, &since, CHILD_SPIN_NS)) continue;
            atomic_store(&mb->child_sleeps, 1);
            if (atomic_load(&mb->req) == seen) crew__futex_wait(&mb->req, seen, NULL, true);
            atomic_store(&mb->child_sleeps, 0);
            spin = 0;
            since = 0;
        }
        seen = r;
        atomic_store(&mb->taken, r); /* from here a death is this call's */
        if (atomic_load(&mb->quit)) return 0;
        mb->rc = crew__call_exec(&mb->call);
        calls++;
        mb->recycling = pool->max_tasks_per_child && calls >= pool->max_tasks_per_child;
        atomic_store(&mb->done, r);
        if (atomic_load(&mb->parent_sleeps)) {
            uint64_t one = 1;
            if (write(mb->bell, &one, sizeof one) < 0) { /* full counter: rung already */
            }
        }
        if (mb->recycling) return 0;
    }
}

/* ----------------------------------------------------------------- parent */

int crew__proc_setup(crew_pool *pool) {
    int rc = crew_shm_setup(NULL);
    if (rc != 0) return rc;
    for (size_t i = 0; i < pool->nworkers; i++) {
        crew__mailbox *mb = crew_shm_alloc(sizeof *mb);
        if (!mb) return CREW_ENOMEM;
        pool->workers[i].mb = mb;
        mb->bell = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (mb->bell < 0) return errno == ENOMEM ? CREW_ENOMEM : CREW_EMFILE;
    }
    return 0;
}

void crew__proc_release(crew_pool *pool) {
    for (size_t i = 0; i < pool->nworkers; i++) {
        crew__mailbox *mb = pool->workers[i].mb;
        if (!mb) continue;
        if (mb->bell >= 0) close(mb->bell);
        if (mb->stage) crew_shm_free(mb->stage);
        crew_shm_free(mb);
    }
}

/* Count a child that died (already reaped) and keep how it ended. */
static void note_death(crew_pool *pool, crew_process *p) {
    int status = 0;
    if (crew_process_exitcode(p, &status) == 0) atomic_store(&pool->last_death, status);
    atomic_fetch_add(&pool->worker_deaths, 1);
}

/* A replacement that dies in its initializer is started again this many
 * times in a row before the call fails: a crashing initializer must not
 * make the pool fork forever (Python's Pool does). */
#define SPAWN_TRIES 5

/* Start w's child and wait for its initializer. 0, the initializer's code,
 * CREW_EWORKERDIED (it died first), or crew_process_start's error. */
static int spawn(crew__worker *w) {
    crew__mailbox *mb = w->mb;
    atomic_store(&mb->ready, 0);
    atomic_store(&mb->quit, 0);
    char name[32];
    snprintf(name, sizeof name, "%.10s-%zu", w->pool->name, w->id);
    crew_process *p;
    int rc = crew_process_start(&p, child_main, w, &(crew_process_options){.name = name, .daemon = true});
    if (rc != 0) return rc;
    while (atomic_load(&mb->ready) == 0) {
        crew__deadline slice = {.ns = crew__now_ns() + 20 * 1000 * 1000, .is_try = false};
        crew__futex_wait(&mb->ready, 0, &slice, true);
        if (atomic_load(&mb->ready) == 0 && !crew_process_is_alive(p)) {
            note_death(w->pool, p);
            crew_process_free(p);
            return CREW_EWORKERDIED;
        }
    }
    if (mb->init_rc != 0) {
        crew_process_join(p, CREW_FOREVER);
        crew_process_free(p);
        return mb->init_rc;
    }
    crew_lock_acquire(&w->child_lock, CREW_FOREVER);
    w->child = p;
    crew_lock_release(&w->child_lock);
    return 0;
}

int crew__proc_start_child(crew__worker *w) { return spawn(w); }

/* Forget w's (ended) child. */
static void drop_child(crew__worker *w) {
    crew_lock_acquire(&w->child_lock, CREW_FOREVER);
    crew_process *p = w->child;
    w->child = NULL;
    crew_lock_release(&w->child_lock);
    if (p) {
        crew_process_join(p, CREW_FOREVER);
        crew_process_free(p);
    }
}

void crew__proc_stop_child(crew__worker *w) {
    crew__mailbox *mb = w->mb;
    if (!w->child) return;
    atomic_store(&mb->quit, 1);
    atomic_fetch_add(&mb->req, 1);
    crew__futex_wake(&mb->req, 1, true);
    if (crew_process_join(w->child, 5.0) != 0) crew_process_kill(w->child);
    drop_child(w);
}

void crew__proc_kill_children(crew_pool *pool) {
    for (size_t i = 0; i < pool->nworkers; i++) {
        crew__worker *w = &pool->workers[i];
        crew_lock_acquire(&w->child_lock, CREW_FOREVER);
        if (w->child) crew_process_kill(w->child);
        crew_lock_release(&w->child_lock);
    }
}

/* Make the stage hold `size` bytes. */
static int stage_reserve(crew__mailbox *mb, size_t size) {
    if (mb->stage_size >= size) return 0;
    size_t want = size < 4096 ? 4096 : size + size / 2;
    unsigned char *s = crew_shm_alloc(want);
    if (!s) return CREW_ENOMEM;
    if (mb->stage) crew_shm_free(mb->stage);
    mb->stage = s;
    mb->stage_size = want;
    return 0;
}

/* Whether [p, p + n) can be handed to the child as it is. */
static bool shared_ok(const void *p, size_t n) {
    return n == 0 || (crew_shm_contains(p) && crew_shm_contains((const char *)p + n - 1));
}

/* Wait for the posted call `r` to be done: 0, or CREW_EWORKERDIED when the
 * child ended first. (Without pidfds, a death is noticed within 20 ms.) */
static int await_done(crew__worker *w, uint32_t r) {
    crew__mailbox *mb = w->mb;
    int64_t since = 0;
    for (int spin = 0; atomic_load(&mb->done) != r; spin++) {
        if (!poll_expired(spin, &since, 0)) continue;
        /* Sleep until the child rings (it does when parent_sleeps is set)
         * or ends (its pidfd polls readable): a death is seen at once. */
        atomic_store(&mb->parent_sleeps, 1);
        if (atomic_load(&mb->done) != r) {
            int pidfd = crew_process_sentinel(w->child);
            struct pollfd fds[2] = {{.fd = mb->bell, .events = POLLIN}, {.fd = pidfd, .events = POLLIN}};
            poll(fds, pidfd >= 0 ? 2 : 1, pidfd >= 0 ? 1000 : 20);
            uint64_t v;
            if (read(mb->bell, &v, sizeof v) < 0) { /* EAGAIN: not rung */
            }
        }
        atomic_store(&mb->parent_sleeps, 0);
        if (atomic_load(&mb->done) != r && !crew_process_is_alive(w->child)) {
            if (atomic_load(&mb->done) == r) return 0; /* finished, then exited */
            return CREW_EWORKERDIED;
        }
        spin = SPIN; /* a ring or a timeout: poll briefly, then sleep again */
        since = crew__now_ns() - POLL_NS + 20 * 1000;
    }
    return 0;
}

/* attempt(): the child died before taking the call. */
#define NOT_TAKEN 1

/* One attempt: run items c->ran .. c->n-1 (or the whole piece) in w's
 * child. Advances c->ran over the items done. 0/the call's code, or
 * CREW_EWORKERDIED. */
static int attempt(crew__worker *w, crew__call *c) {
    crew__mailbox *mb = w->mb;
    size_t r0 = c->op == CREW__CALL_ITEMS ? c->ran : 0;
    size_t n = c->op == CREW__CALL_ITEMS ? c->n - r0 : 0;
    const void *in = c->in_size ? (const char *)c->in + r0 * c->in_size : c->in;
    void *out = c->out_size ? (char *)c->out + r0 * c->out_size : c->out;
    bool in_direct = c->in_size == 0 || shared_ok(in, n * c->in_size);
    bool out_direct = c->out_size == 0 || shared_ok(out, n * c->out_size);
    size_t in_bytes = in_direct ? 0 : align16(n * c->in_size);
    size_t out_bytes = out_direct ? 0 : align16(n * c->out_size);
    size_t rc_bytes = c->keep_going ? align16(n * sizeof(int)) : 0;
    int rc = stage_reserve(mb, in_bytes + out_bytes + rc_bytes + align16(c->acc_size) + 16);
    if (rc != 0) return rc;
    unsigned char *s = mb->stage;
    crew__call *m = &mb->call;
    *m = *c;
    m->stop = m->stop2 = NULL;
    m->ran = 0;
    if (c->op == CREW__CALL_ITEMS) {
        m->first = c->first + r0;
        m->n = n;
        m->in = in_direct ? in : s;
        if (!in_direct) memcpy(s, in, n * c->in_size);
        m->out = out_direct ? out : s + in_bytes;
        m->rcs = c->keep_going ? (int *)(void *)(s + in_bytes + out_bytes) : NULL;
    } else if (c->op == CREW__CALL_REDUCE) {
        m->acc = s;
        memcpy(s, c->acc, c->acc_size);
    }
    uint32_t r = atomic_fetch_add(&mb->req, 1) + 1;
    if (atomic_load(&mb->child_sleeps)) crew__futex_wake(&mb->req, 1, true);
    int died = await_done(w, r);
    /* A child that died before it picked the call up (killed while idle)
     * ran nothing of it: the call goes to the replacement as it is. */
    if (died && atomic_load(&mb->taken) != r) return NOT_TAKEN;
    /* Items the child finished (all of them, or those before the one it
     * died in): take their results. */
    size_t ran = m->ran;
    if (c->op == CREW__CALL_ITEMS) {
        if (!out_direct) memcpy(out, m->out, ran * c->out_size);
        if (c->keep_going) memcpy(c->rcs + r0, m->rcs, ran * sizeof(int));
        c->ran = r0 + ran;
    }
    if (died) return died;
    if (c->op == CREW__CALL_REDUCE) memcpy(c->acc, m->acc, c->acc_size);
    if (mb->recycling) drop_child(w); /* max_tasks_per_child: a new one next time */
    return mb->rc;
}

int crew__call_run(crew__worker *w, crew__call *c) {
    if (!w || w->pool->kind != CREW_PROCESSES || crew__proc_child_of) return crew__call_exec(c);
    crew_pool *pool = w->pool;
    unsigned tries = 0;
    for (;;) {
        if (atomic_load(&pool->terminating)) return CREW_ECANCELED;
        for (int k = 0; !w->child; k++) {
            /* A replacement that died in its initializer ran nothing of
             * this call: start another, a few times. */
            int rc = spawn(w);
            if (rc != 0 && (rc != CREW_EWORKERDIED || k + 1 == SPAWN_TRIES)) return rc;
            if (atomic_load(&pool->terminating)) return CREW_ECANCELED;
        }
        int rc = attempt(w, c);
        if (rc != CREW_EWORKERDIED && rc != NOT_TAKEN) return rc;
        crew_process_join(w->child, CREW_FOREVER);
        note_death(pool, w->child);
        drop_child(w);
        if (atomic_load(&pool->terminating)) return CREW_ECANCELED;
        if (rc == NOT_TAKEN) continue; /* nothing ran: not this call's failure */
        if (tries++ < pool->retries) continue; /* the same item (or piece) again */
        if (c->op != CREW__CALL_ITEMS || !c->keep_going) return CREW_EWORKERDIED;
        /* imap: that item failed; the rest go on. */
        c->rcs[c->ran++] = CREW_EWORKERDIED;
        tries = 0;
        if (c->ran == c->n) return 0;
    }
}
