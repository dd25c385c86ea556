/* Tests specific to process pools (CREW_PROCESSES; pool.h, src/pool/proc.c),
 * beyond the shared suite in test_pool.c: worker deaths (a task that
 * segfaults, one that calls _exit, one SIGKILLed from outside) reported on
 * their own futures, map indices and imap items while the rest finishes;
 * retries; a worker killed in the middle of a map of 100,000 items;
 * max_tasks_per_child; the initializer in the worker processes (once per
 * process, replacements included; a failing one leaves no child); terminate
 * with running and pending work; the memory rules (arena arrays used in
 * place, ordinary memory copied, a global ctx); Ctrl-C and SIGTERM to a
 * program with a running map; and a stress test with workers killed at
 * random moments.
 *
 * Tasks share state with the test through a `shared` block in the arena
 * (crew_shm_alloc, mapped before the pool forks), passed as ctx: counters,
 * the pids of the processes that ran tasks or initializers, a CREW_SHARED
 * event that blocked tasks wait on. Tasks never call cmocka; they return an
 * error code the test asserts on. Nothing sleeps to wait: the test polls a
 * condition with a generous deadline (TEST_WAIT_UNTIL).
 *
 * Every test ends with assert_clean(): every pid a task or an initializer
 * reported is gone (kill(pid, 0) fails with ESRCH, or the pid now belongs
 * to a process that is not our child: pids are reused quickly when
 * pid_max is 32768) and waitpid(-1, NULL, WNOHANG) finds no child at all.
 *
 * A segfaulting task first restores SIGSEGV's default action: the worker
 * process is a copy of this test process, where cmocka (and ASan) install
 * handlers that would otherwise catch the signal in the child. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "crew/error.h"
#include "crew/future.h"
#include "crew/pool.h"
#include "crew/process.h"
#include "crew/shm.h"
#include "crew/sync.h"

#define TEST_PROCESS_LIMIT 150.0
#include "test_harness.h"

/* A blocked task waits this long for its gate: far longer than any test
 * waits for the library to kill it. */
#define BLOCK_WAIT 90.0
/* How soon something that should happen "at once" must have happened. */
#define PROMPT 5.0

/* ------------------------------------------------------------ shared state */

#define MAXPIDS 2048

typedef struct shared {
    crew_event gate;          /* never set unless a test says so */
    _Atomic int blocked_pid;  /* the last task that blocked on the gate */
    _Atomic int64_t stamp_ns; /* CLOCK_MONOTONIC when a task killed itself */
    _Atomic long started;     /* t_item runs begun */
    _Atomic long done;        /* t_item runs that returned */
    _Atomic long attempts;    /* ACT_EXIT_N runs */
    _Atomic int once;         /* one-shot flag of ACT_*_ONCE */
    _Atomic long init_fail_at; /* the initializer run with this number (1-based) fails */
    _Atomic long init_block_at; /* the initializer run with this number blocks */
    _Atomic long init_die_at;   /* the initializer run with this number _exits */
    _Atomic long ninit;       /* initializer runs */
    _Atomic int init_pids[MAXPIDS];
    _Atomic long npids;       /* distinct processes that ran a task */
    _Atomic int pids[MAXPIDS];
} shared;

static shared *shared_new(void) {
    shared *s = crew_shm_alloc(sizeof *s);
    assert_non_null(s);
    assert_true(crew_shm_contains(s));
    ASSERT_RC(crew_event_init(&s->gate, CREW_SHARED), 0);
    return s;
}

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static double since_ns(int64_t t) { return (double)(now_ns() - t) * 1e-9; }

/* The process this task runs in has been recorded (per process: a worker
 * process is forked from the test process, where this is 0). */
static pid_t noted_pid;

static void note_pid(shared *s) {
    pid_t me = getpid();
    if (noted_pid == me) return;
    noted_pid = me;
    long k = atomic_fetch_add(&s->npids, 1);
    if (k < MAXPIDS) atomic_store(&s->pids[k], (int)me);
}

static size_t pid_count(const shared *s) {
    long n = atomic_load(&((shared *)s)->npids);
    return (size_t)(n < MAXPIDS ? n : MAXPIDS);
}

static bool pid_noted(const shared *s, int pid) {
    size_t n = pid_count(s);
    for (size_t i = 0; i < n; i++)
        if (atomic_load(&((shared *)s)->pids[i]) == pid) return true;
    return false;
}

/* The parent of `pid` from /proc, or -1. */
static int ppid_of(int pid) {
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    if (!read_small(path, buf, sizeof buf)) return -1;
    const char *p = strrchr(buf, ')');
    if (p == NULL) return -1;
    char st;
    int ppid;
    if (sscanf(p + 1, " %c %d", &st, &ppid) != 2) return -1;
    return ppid;
}

/* `pid` no longer names one of our worker processes: it does not exist,
 * or it is now a process that is neither our child nor `other_parent`'s. */
static bool pid_gone(int pid, int other_parent) {
    if (pid <= 0) return true;
    if (kill(pid, 0) == -1 && errno == ESRCH) return true;
    int pp = ppid_of(pid);
    return pp > 0 && pp != getpid() && pp != other_parent;
}

static void assert_pid_gone(int pid, int other_parent, const char *what) {
    if (!TEST_WAIT_UNTIL(pid_gone(pid, other_parent), SETTLE))
        fail_msg("%s %d still exists after %.0f s (parent %d)", what, pid, SETTLE, ppid_of(pid));
}

/* This process has no child left, alive or zombie. */
static void assert_no_children(void) {
    errno = 0;
    int st = 0;
    pid_t r = waitpid(-1, &st, WNOHANG);
    int e = errno;
    if (r == -1 && e == ECHILD) return;
    if (r > 0)
        fail_msg("a child (%d) was left behind, unreaped (status 0x%x)", (int)r, st);
    fail_msg("waitpid(-1) returned %d (%s): a child process is left", (int)r,
             r == 0 ? "still running" : strerror(e));
}

/* The end of every test, after its pools are gone. */
static void assert_clean(const shared *s) {
    if (s != NULL) {
        size_t n = pid_count(s);
        for (size_t i = 0; i < n; i++)
            assert_pid_gone(atomic_load(&((shared *)s)->pids[i]), 0, "worker process");
        long ni = atomic_load(&((shared *)s)->ninit);
        for (long i = 0; i < ni && i < MAXPIDS; i++)
            assert_pid_gone(atomic_load(&((shared *)s)->init_pids[i]), 0, "initialized process");
    }
    assert_no_children();
}

/* A task killed while it waited on the gate stays counted as its waiter:
 * the event then cannot be destroyed (CREW_EBUSY), and is dropped as is. */
static void shared_free(shared *s) {
    int rc = crew_event_destroy(&s->gate);
    if (!(rc == 0 || (rc == CREW_EBUSY && atomic_load(&s->blocked_pid) != 0)))
        ASSERT_RC(rc, 0);
    ASSERT_RC(crew_shm_free(s), 0);
}

/* -------------------------------------------------------------- the task */

static int64_t f_of(int64_t v) { return v * 3 + 1; }

enum act {
    ACT_NONE = 0,
    ACT_SEGV,        /* raise(SIGSEGV) */
    ACT_EXIT,        /* _exit(3) */
    ACT_SELFKILL,    /* raise(SIGKILL) */
    ACT_BLOCK,       /* publish the pid, wait on the gate */
    ACT_EXIT_ONCE,   /* _exit(3) the first time any such item runs */
    ACT_BLOCK_ONCE,  /* block the first time any such item runs */
    ACT_EXIT_N,      /* _exit(3) while fewer than `arg` attempts were made */
    ACT_PID,         /* out = getpid() */
};

typedef struct item {
    int64_t v;
    int32_t act;
    int32_t arg;
} item;

static void die_stamped(shared *s, int how) {
    atomic_store(&s->stamp_ns, now_ns());
    if (how == ACT_SEGV) {
        signal(SIGSEGV, SIG_DFL);
        raise(SIGSEGV);
    } else if (how == ACT_SELFKILL) {
        raise(SIGKILL);
    }
    _exit(3);
}

static int block(shared *s) {
    atomic_store(&s->blocked_pid, (int)getpid());
    return crew_event_wait(&s->gate, BLOCK_WAIT) == 0 ? 0 : CREW_ETIMEDOUT;
}

/* ctx: shared. in: item. out: int64 f(v) (ACT_PID: the pid). */
static int t_item(const void *in, void *out, void *ctx) {
    shared *s = ctx;
    item it;
    memcpy(&it, in, sizeof it);
    note_pid(s);
    atomic_fetch_add(&s->started, 1);
    int64_t r = f_of(it.v);
    switch (it.act) {
    case ACT_SEGV:
    case ACT_EXIT:
    case ACT_SELFKILL:
        die_stamped(s, it.act);
        break;
    case ACT_BLOCK:
        if (block(s) != 0) return CREW_ETIMEDOUT;
        break;
    case ACT_EXIT_ONCE:
        if (atomic_exchange(&s->once, 1) == 0) die_stamped(s, ACT_EXIT);
        break;
    case ACT_BLOCK_ONCE:
        if (atomic_exchange(&s->once, 1) == 0 && block(s) != 0) return CREW_ETIMEDOUT;
        break;
    case ACT_EXIT_N:
        if (atomic_fetch_add(&s->attempts, 1) < it.arg) _exit(3);
        break;
    case ACT_PID:
        r = (int64_t)getpid();
        break;
    default:
        break;
    }
    atomic_fetch_add(&s->done, 1);
    memcpy(out, &r, sizeof r);
    return 0;
}

/* ------------------------------------------------------------- helpers */

static crew_pool *proc_pool(size_t workers, unsigned retries, size_t max_tasks, shared *s) {
    crew_pool_options o = {.kind = CREW_PROCESSES, .workers = workers, .retries = retries,
                           .max_tasks_per_child = max_tasks};
    (void)s;
    crew_pool *p = NULL;
    ASSERT_RC(crew_pool_create(&p, &o), 0);
    assert_non_null(p);
    assert_int_equal(crew_pool_workers(p), workers);
    return p;
}

static void pool_end(crew_pool *p) {
    ASSERT_RC(crew_pool_close(p), 0);
    ASSERT_RC(crew_pool_join(p, LONG_WAIT), 0);
    crew_pool_free(p);
}

static crew_future *submit_item(crew_pool *p, shared *s, int64_t v, int act, int arg) {
    item it = {v, act, arg};
    crew_task t = {.fn = t_item, .in = &it, .in_size = sizeof it, .out_size = sizeof(int64_t),
                   .ctx = s};
    crew_future *f = NULL;
    ASSERT_RC(crew_pool_submit(p, &t, &f), 0);
    assert_non_null(f);
    return f;
}

static void get_val(crew_future *f, int64_t want) {
    int64_t got = INT64_MIN;
    ASSERT_RC(crew_future_get(f, &got, LONG_WAIT), 0);
    assert_int_equal(got, want);
    crew_future_free(f);
}

static void assert_deaths(crew_pool *p, size_t want, int want_last) {
    int last = 12345;
    size_t n = crew_pool_worker_deaths(p, &last);
    if (n != want || (want > 0 && last != want_last))
        fail_msg("worker_deaths %zu, last %d; expected %zu, last %d", n, last, want, want_last);
    if (want == 0) assert_int_equal(last, 12345); /* left alone */
}

/* Wait for the helper-free condition "a task blocked on the gate". */
static int wait_blocked_pid(shared *s) {
    assert_true(TEST_WAIT_UNTIL(atomic_load(&s->blocked_pid) != 0, LONG_WAIT));
    int pid = atomic_load(&s->blocked_pid);
    assert_int_equal(ppid_of(pid), getpid()); /* a worker process of ours */
    return pid;
}

/* --------------------------------------------- deaths on submitted tasks */

static void cb_err_code(int code, void *arg) { atomic_store((_Atomic int *)arg, code); }

/* A batch of 16 tasks on 2 workers, task 5 dying by `act` (ACT_BLOCK: the
 * test SIGKILLs it): its future fails with CREW_EWORKERDIED (and its error
 * callback gets that code), the 15 others finish with their values, the
 * death is counted with `want_last`, and the pool goes on serving. */
static void death_in_batch(int act, int want_last) {
    shared *s = shared_new();
    crew_pool *p = proc_pool(2, 0, 0, s);
    enum { N = 16, BAD = 5 };
    crew_future *f[N];
    _Atomic int err_code = 0;
    for (int i = 0; i < N; i++) {
        item it = {i, i == BAD ? act : ACT_NONE, 0};
        crew_task t = {.fn = t_item, .in = &it, .in_size = sizeof it,
                       .out_size = sizeof(int64_t), .ctx = s};
        if (i == BAD) {
            t.error_callback = cb_err_code;
            t.callback_arg = (void *)&err_code;
        }
        ASSERT_RC(crew_pool_submit(p, &t, &f[i]), 0);
    }
    if (act == ACT_BLOCK) {
        int pid = wait_blocked_pid(s);
        /* The others finish while task 5 holds its worker. */
        for (int i = 0; i < N; i++)
            if (i != BAD) assert_true(TEST_WAIT_UNTIL(crew_future_done(f[i]), LONG_WAIT));
        assert_false(crew_future_done(f[BAD]));
        assert_int_equal(kill(pid, SIGKILL), 0);
    }
    for (int i = 0; i < N; i++) {
        if (i == BAD) {
            ASSERT_RC(crew_future_get(f[i], NULL, LONG_WAIT), CREW_EWORKERDIED);
            assert_false(crew_future_cancelled(f[i]));
            crew_future_free(f[i]);
        } else {
            get_val(f[i], f_of(i));
        }
    }
    assert_int_equal(atomic_load(&err_code), CREW_EWORKERDIED);
    assert_deaths(p, 1, want_last);
    /* The pool replaced the worker and still runs everything. */
    crew_future *g[N];
    for (int i = 0; i < N; i++) g[i] = submit_item(p, s, 100 + i, ACT_NONE, 0);
    for (int i = 0; i < N; i++) get_val(g[i], f_of(100 + i));
    assert_deaths(p, 1, want_last);
    assert_true(pid_count(s) >= 2);
    pool_end(p);
    assert_clean(s);
    shared_free(s);
}

static void test_task_segfaults(void **state) {
    (void)state;
    death_in_batch(ACT_SEGV, -SIGSEGV);
}

static void test_task_exits(void **state) {
    (void)state;
    death_in_batch(ACT_EXIT, 3);
}

static void test_task_killed_from_outside(void **state) {
    (void)state;
    death_in_batch(ACT_BLOCK, -SIGKILL);
}

/* Three deaths in a row on one pool: counted 1, 2, 3 with the last one's
 * status each time. */
static void test_deaths_counted(void **state) {
    (void)state;
    shared *s = shared_new();
    crew_pool *p = proc_pool(1, 0, 0, s);
    assert_deaths(p, 0, 0);
    const int acts[3] = {ACT_EXIT, ACT_SEGV, ACT_SELFKILL};
    const int lasts[3] = {3, -SIGSEGV, -SIGKILL};
    for (int k = 0; k < 3; k++) {
        crew_future *f = submit_item(p, s, k, acts[k], 0);
        ASSERT_RC(crew_future_get(f, NULL, LONG_WAIT), CREW_EWORKERDIED);
        crew_future_free(f);
        assert_deaths(p, (size_t)k + 1, lasts[k]);
        get_val(submit_item(p, s, k, ACT_NONE, 0), f_of(k));
    }
    assert_int_equal(pid_count(s), 4); /* the first and three replacements */
    pool_end(p);
    assert_clean(s);
    shared_free(s);
}

/* ----------------------------------------------------------------- retries */

/* A task that dies the first n times: with `retries` >= n it succeeds after
 * n deaths (n + 1 attempts); with fewer it fails with CREW_EWORKERDIED after
 * retries + 1 attempts, as many deaths. */
static void retry_case(unsigned retries, int n) {
    shared *s = shared_new();
    crew_pool *p = proc_pool(2, retries, 0, s);
    crew_future *f = submit_item(p, s, 7, ACT_EXIT_N, n);
    crew_future *others[8];
    for (int i = 0; i < 8; i++) others[i] = submit_item(p, s, i, ACT_NONE, 0);
    if ((int)retries >= n) {
        get_val(f, f_of(7));
        assert_int_equal(atomic_load(&s->attempts), n + 1);
        assert_deaths(p, (size_t)n, 3);
    } else {
        ASSERT_RC(crew_future_get(f, NULL, LONG_WAIT), CREW_EWORKERDIED);
        crew_future_free(f);
        assert_int_equal(atomic_load(&s->attempts), (long)retries + 1);
        assert_deaths(p, retries + 1, 3);
    }
    for (int i = 0; i < 8; i++) get_val(others[i], f_of(i));
    pool_end(p);
    assert_clean(s);
    shared_free(s);
}

static void test_retries_enough(void **state) {
    (void)state;
    retry_case(3, 3);
    retry_case(5, 2);
}

static void test_retries_too_few(void **state) {
    (void)state;
    retry_case(2, 3);
    retry_case(0, 1);
}

/* ---------------------------------------------------- a death inside a map */

#define BIG 100000

static item *big_items(bool arena, size_t n, size_t bad, int act) {
    item *in = arena ? crew_shm_alloc(n * sizeof *in) : malloc(n * sizeof *in);
    assert_non_null(in);
    for (size_t i = 0; i < n; i++) in[i] = (item){(int64_t)i, i == bad ? act : ACT_NONE, 0};
    return in;
}

static int64_t *big_out(bool arena, size_t n) {
    int64_t *out = arena ? crew_shm_alloc(n * sizeof *out) : malloc(n * sizeof *out);
    assert_non_null(out);
    for (size_t i = 0; i < n; i++) out[i] = -1;
    return out;
}

static void big_free(bool arena, void *p) {
    if (arena) ASSERT_RC(crew_shm_free(p), 0);
    else free(p);
}

/* Every output is right (all) or right or untouched (a failed map). */
static void check_outs(const int64_t *out, size_t n, bool all) {
    size_t bad = 0, first = SIZE_MAX, ran = 0;
    for (size_t i = 0; i < n; i++) {
        if (out[i] == f_of((int64_t)i)) ran++;
        else if (all || out[i] != -1) {
            if (bad++ == 0) first = i;
        }
    }
    if (bad != 0)
        fail_msg("%zu outputs wrong, first [%zu] = %lld", bad, first, (long long)out[first]);
    if (all) assert_int_equal(ran, n);
}

/* One item of 100,000 kills its own process (no retries): the map returns
 * within a second of the death with CREW_EWORKERDIED and that item's index.
 * Inputs and outputs in ordinary memory in one round, in the arena in the
 * other. */
static void test_map_item_kills_itself(void **state) {
    (void)state;
    for (int round = 0; round < 2; round++) {
        bool arena = round == 1;
        shared *s = shared_new();
        crew_pool *p = proc_pool(2, 0, 0, s);
        const size_t bad = 54321;
        item *in = big_items(arena, BIG, bad, round == 0 ? ACT_SELFKILL : ACT_SEGV);
        int64_t *out = big_out(arena, BIG);
        size_t failed = 777;
        crew_map m = {.fn = t_item, .in = in, .in_size = sizeof *in, .out = out,
                      .out_size = sizeof *out, .count = BIG, .ctx = s, .failed_index = &failed};
        ASSERT_RC(crew_pool_map(p, &m), CREW_EWORKERDIED);
        double late = since_ns(atomic_load(&s->stamp_ns));
        if (late > 1.0) fail_msg("map returned %.3f s after its worker died", late);
        assert_int_equal(failed, bad);
        assert_int_equal(out[bad], -1);
        check_outs(out, BIG, false);
        assert_deaths(p, 1, round == 0 ? -SIGKILL : -SIGSEGV);
        /* The pool goes on: the same map without the killer. */
        in[bad].act = ACT_NONE;
        ASSERT_RC(crew_pool_map(p, &m), 0);
        check_outs(out, BIG, true);
        pool_end(p);
        big_free(arena, in);
        big_free(arena, out);
        assert_clean(s);
        shared_free(s);
    }
}

typedef struct mapper {
    pthread_t th;
    crew_pool *pool;
    const crew_map *map;
    _Atomic bool done;
    _Atomic int64_t end_ns;
    int rc;
} mapper;

static void *mapper_main(void *arg) {
    mapper *h = arg;
    h->rc = crew_pool_map(h->pool, h->map);
    atomic_store(&h->end_ns, now_ns());
    atomic_store(&h->done, true);
    return NULL;
}

/* The test SIGKILLs a worker while the map of 100,000 items runs (the
 * worker holds item 50,000, blocked): crew_pool_map returns within a second
 * of the kill with CREW_EWORKERDIED and that index. */
static void test_map_worker_killed_from_outside(void **state) {
    (void)state;
    shared *s = shared_new();
    crew_pool *p = proc_pool(2, 0, 0, s);
    const size_t bad = 50000;
    item *in = big_items(false, BIG, bad, ACT_BLOCK);
    int64_t *out = big_out(false, BIG);
    size_t failed = 777;
    crew_map m = {.fn = t_item, .in = in, .in_size = sizeof *in, .out = out,
                  .out_size = sizeof *out, .count = BIG, .ctx = s, .failed_index = &failed};
    mapper h = {.pool = p, .map = &m};
    th_start(&h.th, mapper_main, &h);
    int pid = wait_blocked_pid(s);
    assert_false(atomic_load(&h.done));
    int64_t t_kill = now_ns();
    assert_int_equal(kill(pid, SIGKILL), 0);
    assert_true(TEST_WAIT_UNTIL(atomic_load(&h.done), LONG_WAIT));
    th_join(h.th);
    double late = (double)(atomic_load(&h.end_ns) - t_kill) * 1e-9;
    if (late > 1.0) fail_msg("map returned %.3f s after the kill", late);
    ASSERT_RC(h.rc, CREW_EWORKERDIED);
    assert_int_equal(failed, bad);
    check_outs(out, BIG, false);
    assert_deaths(p, 1, -SIGKILL);
    pool_end(p);
    free(in);
    free(out);
    assert_clean(s);
    shared_free(s);
}

/* With retries 1 and a one-shot killer (an item that dies the first time
 * only, or a worker the test kills once), the map of 100,000 items succeeds
 * and every output is right. */
static void test_map_death_retried(void **state) {
    (void)state;
    for (int round = 0; round < 2; round++) {
        shared *s = shared_new();
        crew_pool *p = proc_pool(2, 1, 0, s);
        const size_t bad = 61234;
        bool arena = round == 0;
        item *in = big_items(arena, BIG, bad, round == 0 ? ACT_EXIT_ONCE : ACT_BLOCK_ONCE);
        int64_t *out = big_out(arena, BIG);
        size_t failed = 777;
        crew_map m = {.fn = t_item, .in = in, .in_size = sizeof *in, .out = out,
                      .out_size = sizeof *out, .count = BIG, .ctx = s, .failed_index = &failed};
        if (round == 0) {
            ASSERT_RC(crew_pool_map(p, &m), 0);
            assert_deaths(p, 1, 3);
        } else {
            mapper h = {.pool = p, .map = &m};
            th_start(&h.th, mapper_main, &h);
            int pid = wait_blocked_pid(s);
            assert_false(atomic_load(&h.done));
            assert_int_equal(kill(pid, SIGKILL), 0);
            assert_true(TEST_WAIT_UNTIL(atomic_load(&h.done), LONG_WAIT));
            th_join(h.th);
            ASSERT_RC(h.rc, 0);
            assert_deaths(p, 1, -SIGKILL);
        }
        assert_int_equal(failed, 777);
        check_outs(out, BIG, true);
        pool_end(p);
        big_free(arena, in);
        big_free(arena, out);
        assert_clean(s);
        shared_free(s);
    }
}

/* The state letter of `pid` in /proc ('Z': a zombie), or 0. */
static char state_of(int pid) {
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    if (!read_small(path, buf, sizeof buf)) return 0;
    const char *p = strrchr(buf, ')');
    return p != NULL && p[1] == ' ' ? p[2] : 0;
}

/* A worker process killed while idle (the OOM killer may pick it) was
 * running nothing: the next task given to that worker runs on a new process
 * and succeeds, without retries; the death is counted. */
static void test_idle_worker_killed(void **state) {
    (void)state;
    shared *s = shared_new();
    crew_pool *p = proc_pool(1, 0, 0, s);
    int64_t a = 0, b = 0;
    crew_future *f = submit_item(p, s, 0, ACT_PID, 0);
    ASSERT_RC(crew_future_get(f, &a, LONG_WAIT), 0);
    crew_future_free(f);
    assert_int_equal(ppid_of((int)a), getpid());
    assert_int_equal(kill((pid_t)a, SIGKILL), 0);
    assert_true(TEST_WAIT_UNTIL(state_of((int)a) == 'Z' || pid_gone((int)a, 0), LONG_WAIT));
    f = submit_item(p, s, 0, ACT_PID, 0);
    ASSERT_RC(crew_future_get(f, &b, LONG_WAIT), 0);
    crew_future_free(f);
    assert_int_not_equal(a, b);
    assert_deaths(p, 1, -SIGKILL);
    pool_end(p);
    assert_clean(s);
    shared_free(s);
}

/* --------------------------------------------------------------- imap */

/* An imap item that kills its worker gives CREW_EWORKERDIED at its index;
 * the following items (of its chunk too) still come, with their values.
 * Ordered and unordered, chunk sizes 1 and 7. */
static void test_imap_item_kills_worker(void **state) {
    (void)state;
    enum { N = 300, BAD = 80 }; /* with chunk 7, BAD is the 4th of 77..83 */
    for (int round = 0; round < 4; round++) {
        bool unordered = round & 1;
        size_t chunk = round < 2 ? 1 : 7;
        shared *s = shared_new();
        crew_pool *p = proc_pool(2, 0, 0, s);
        item in[N];
        for (int i = 0; i < N; i++) in[i] = (item){i, i == BAD ? (round & 2 ? ACT_SEGV : ACT_EXIT) : ACT_NONE, 0};
        crew_imap im = {.fn = t_item, .ctx = s, .in = in, .count = N, .in_size = sizeof *in,
                        .out_size = sizeof(int64_t), .unordered = unordered, .chunk_size = chunk};
        crew_imap_iter *it = NULL;
        ASSERT_RC(crew_pool_imap(p, &im, &it), 0);
        bool seen[N] = {false};
        for (int k = 0; k < N; k++) {
            int64_t v = -1;
            size_t idx = SIZE_MAX;
            int rc = crew_imap_next(it, &v, &idx, LONG_WAIT);
            if (rc != 0 && rc != CREW_EWORKERDIED)
                fail_msg("round %d, result %d: %s", round, k, crew_err_name(rc));
            assert_true(idx < N);
            if (!unordered) assert_int_equal(idx, (size_t)k);
            assert_false(seen[idx]);
            seen[idx] = true;
            if (idx == BAD) {
                ASSERT_RC(rc, CREW_EWORKERDIED);
            } else {
                ASSERT_RC(rc, 0);
                assert_int_equal(v, f_of((int64_t)idx));
            }
        }
        ASSERT_RC(crew_imap_next(it, NULL, NULL, LONG_WAIT), CREW_EOF);
        crew_imap_free(it);
        assert_deaths(p, 1, round & 2 ? -SIGSEGV : 3);
        pool_end(p);
        assert_clean(s);
        shared_free(s);
    }
}

/* ------------------------------------------------------ for and reduce */

typedef struct loopctx {
    shared *s;
    _Atomic int32_t *marks; /* arena: runs of each iteration */
    size_t bad;             /* the piece holding this iteration dies */
    int act;                /* ACT_EXIT (always) or ACT_EXIT_ONCE */
} loopctx;

static void loop_maybe_die(loopctx *c, size_t b, size_t e) {
    note_pid(c->s);
    if (c->bad < b || c->bad >= e) return;
    if (c->act == ACT_EXIT || atomic_exchange(&c->s->once, 1) == 0) die_stamped(c->s, ACT_EXIT);
}

static int b_mark(size_t b, size_t e, void *ctx) {
    loopctx *c = ctx;
    loop_maybe_die(c, b, e);
    for (size_t i = b; i < e; i++) atomic_fetch_add(&c->marks[i], 1);
    return 0;
}

static int r_sum(size_t b, size_t e, void *acc, void *ctx) {
    loopctx *c = ctx;
    loop_maybe_die(c, b, e);
    int64_t a;
    memcpy(&a, acc, sizeof a);
    for (size_t i = b; i < e; i++) a += (int64_t)i;
    memcpy(acc, &a, sizeof a);
    return 0;
}

static void c_sum(void *acc, const void *other, void *ctx) {
    (void)ctx;
    int64_t a, o;
    memcpy(&a, acc, sizeof a);
    memcpy(&o, other, sizeof o);
    a += o;
    memcpy(acc, &a, sizeof a);
}

/* A piece of a for or a reduce whose process dies: without retries the call
 * fails with CREW_EWORKERDIED; with retries 1 and a one-shot death it
 * succeeds, every iteration ran (the dead piece's again), and the reduction
 * is exact. */
static void test_for_reduce_death(void **state) {
    (void)state;
    enum { N = 20000 };
    for (unsigned retries = 0; retries < 2; retries++) {
        shared *s = shared_new();
        loopctx *c = crew_shm_alloc(sizeof *c);
        assert_non_null(c);
        c->s = s;
        c->marks = crew_shm_alloc(N * sizeof *c->marks);
        assert_non_null(c->marks);
        c->bad = 12345;
        c->act = retries ? ACT_EXIT_ONCE : ACT_EXIT;
        crew_pool *p = proc_pool(2, retries, 0, s);
        crew_for lf = {.begin = 0, .end = N, .body = b_mark, .ctx = c, .grain = 100};
        ASSERT_RC(crew_pool_for(p, &lf), retries ? 0 : CREW_EWORKERDIED);
        if (retries) {
            for (size_t i = 0; i < N; i++) assert_true(atomic_load(&c->marks[i]) >= 1);
            assert_deaths(p, 1, 3);
            atomic_store(&s->once, 0);
        } else {
            assert_int_equal(atomic_load(&c->marks[c->bad]), 0);
            assert_deaths(p, 1, 3);
        }
        int64_t zero = 0, sum = -1;
        crew_reduce r = {.begin = 0, .end = N, .body = r_sum, .combine = c_sum, .identity = &zero,
                         .size = sizeof sum, .result = &sum, .ctx = c, .grain = 100};
        ASSERT_RC(crew_pool_reduce(p, &r), retries ? 0 : CREW_EWORKERDIED);
        if (retries) assert_int_equal(sum, (int64_t)N * (N - 1) / 2);
        assert_deaths(p, 2, 3);
        pool_end(p);
        crew_shm_free(c->marks);
        crew_shm_free(c);
        assert_clean(s);
        shared_free(s);
    }
}

/* ------------------------------------------------- max_tasks_per_child */

/* max_tasks_per_child = 1: every submit (one call each) runs in a process
 * of its own. Recycling is not a death. */
static void test_max_tasks_one(void **state) {
    (void)state;
    shared *s = shared_new();
    crew_pool *p = proc_pool(2, 0, 1, s);
    enum { N = 20 };
    crew_future *f[N];
    for (int i = 0; i < N; i++) f[i] = submit_item(p, s, i, ACT_PID, 0);
    int64_t pids[N];
    for (int i = 0; i < N; i++) {
        ASSERT_RC(crew_future_get(f[i], &pids[i], LONG_WAIT), 0);
        crew_future_free(f[i]);
        assert_true(pids[i] > 0 && pids[i] != getpid());
        for (int j = 0; j < i; j++)
            if (pids[j] == pids[i]) fail_msg("tasks %d and %d ran in the same process %lld", j, i, (long long)pids[i]);
    }
    assert_int_equal(pid_count(s), N);
    assert_deaths(p, 0, 0);
    pool_end(p);
    assert_clean(s);
    shared_free(s);
}

/* How calls are counted here: each submit is one call; each imap chunk is
 * one call (its items all run in one process). With one worker and K = 3,
 * ten submits made one after the other (each waited for) run as calls
 * 1-3, 4-6, 7-9, 10: four processes, task i in the (i / 3)-th. With two
 * workers and K = 4, 30 submits at once: each process serves at most 4,
 * all but at most one per worker exactly 4, so at least 8 processes. With
 * one worker, K = 2 and an imap of 24 items in chunks of 3 (8 calls): each
 * process runs exactly two whole chunks, 4 processes. */
static void test_max_tasks_counts(void **state) {
    (void)state;
    shared *s = shared_new();
    /* One worker, K = 3, sequential submits. */
    crew_pool *p = proc_pool(1, 0, 3, s);
    int64_t pid[10];
    for (int i = 0; i < 10; i++) {
        crew_future *f = submit_item(p, s, i, ACT_PID, 0);
        ASSERT_RC(crew_future_get(f, &pid[i], LONG_WAIT), 0);
        crew_future_free(f);
    }
    for (int i = 0; i < 10; i++) {
        if (i % 3 != 0) assert_int_equal(pid[i], pid[i - 1]);
        else if (i > 0) assert_int_not_equal(pid[i], pid[i - 1]);
    }
    assert_int_equal(pid_count(s), 4);
    assert_deaths(p, 0, 0);
    pool_end(p);

    /* Two workers, K = 4, 30 submits at once. */
    long base = (long)pid_count(s);
    p = proc_pool(2, 0, 4, s);
    enum { N = 30, K = 4 };
    crew_future *f[N];
    for (int i = 0; i < N; i++) f[i] = submit_item(p, s, i, ACT_PID, 0);
    int64_t got[N];
    for (int i = 0; i < N; i++) {
        ASSERT_RC(crew_future_get(f[i], &got[i], LONG_WAIT), 0);
        crew_future_free(f[i]);
    }
    int distinct = 0, short_ones = 0;
    for (int i = 0; i < N; i++) {
        bool first = true;
        int uses = 0;
        for (int j = 0; j < N; j++) {
            if (got[j] == got[i]) {
                uses++;
                if (j < i) first = false;
            }
        }
        if (!first) continue;
        distinct++;
        if (uses > K) fail_msg("process %lld ran %d calls, more than %d", (long long)got[i], uses, K);
        if (uses < K) short_ones++;
    }
    if (short_ones > 2) fail_msg("%d processes ran fewer than %d calls (at most one per worker)", short_ones, K);
    assert_true(distinct >= (N + K - 1) / K);
    assert_int_equal((long)pid_count(s) - base, distinct);
    assert_deaths(p, 0, 0);
    pool_end(p);

    /* One worker, K = 2, imap chunks of 3. */
    base = (long)pid_count(s);
    p = proc_pool(1, 0, 2, s);
    enum { M = 24, C = 3 };
    item in[M];
    for (int i = 0; i < M; i++) in[i] = (item){i, ACT_PID, 0};
    crew_imap im = {.fn = t_item, .ctx = s, .in = in, .count = M, .in_size = sizeof *in,
                    .out_size = sizeof(int64_t), .chunk_size = C};
    crew_imap_iter *it = NULL;
    ASSERT_RC(crew_pool_imap(p, &im, &it), 0);
    int64_t ipid[M];
    for (int i = 0; i < M; i++) {
        size_t idx = SIZE_MAX;
        ASSERT_RC(crew_imap_next(it, &ipid[i], &idx, LONG_WAIT), 0);
        assert_int_equal(idx, (size_t)i);
    }
    ASSERT_RC(crew_imap_next(it, NULL, NULL, LONG_WAIT), CREW_EOF);
    crew_imap_free(it);
    for (int c = 0; c < M / C; c++)
        for (int j = 1; j < C; j++) assert_int_equal(ipid[c * C + j], ipid[c * C]); /* a chunk: one process */
    for (int i = 0; i < M; i++) {
        int uses = 0;
        for (int j = 0; j < M; j++) uses += ipid[j] == ipid[i];
        assert_int_equal(uses, 2 * C); /* two chunks per process */
    }
    assert_int_equal((long)pid_count(s) - base, M / C / 2);
    assert_deaths(p, 0, 0);
    pool_end(p);
    assert_clean(s);
    shared_free(s);
}

/* ------------------------------------------------------------ initializer */

/* Records the process it runs in; the run numbered init_fail_at (-1: every
 * run) fails with CREW_EACCES; the run numbered init_block_at blocks on the
 * gate. */
static int init_note(void *arg) {
    shared *s = arg;
    long k = atomic_fetch_add(&s->ninit, 1);
    if (k < MAXPIDS) atomic_store(&s->init_pids[k], (int)getpid());
    long fail_at = atomic_load(&s->init_fail_at);
    if (fail_at == -1 || k + 1 == fail_at) return CREW_EACCES;
    if (k + 1 == atomic_load(&s->init_die_at)) _exit(4);
    if (k + 1 == atomic_load(&s->init_block_at)) {
        atomic_store(&s->blocked_pid, (int)getpid());
        if (crew_event_wait(&s->gate, BLOCK_WAIT) != 0) return CREW_ETIMEDOUT;
    }
    return 0;
}

static crew_pool *init_pool(shared *s, size_t workers, size_t max_tasks, unsigned retries) {
    crew_pool_options o = {.kind = CREW_PROCESSES, .workers = workers, .initializer = init_note,
                           .initarg = s, .max_tasks_per_child = max_tasks, .retries = retries};
    crew_pool *p = NULL;
    ASSERT_RC(crew_pool_create(&p, &o), 0);
    return p;
}

static bool init_noted(shared *s, int64_t pid, long *times) {
    long n = atomic_load(&s->ninit), c = 0;
    for (long i = 0; i < n; i++) c += atomic_load(&s->init_pids[i]) == pid;
    if (times) *times = c;
    return c > 0;
}

/* Each initializer run was in a distinct process, not this one. */
static void check_init_pids(shared *s) {
    long n = atomic_load(&s->ninit);
    for (long i = 0; i < n; i++) {
        int pid = atomic_load(&s->init_pids[i]);
        assert_true(pid > 0);
        assert_int_not_equal(pid, getpid());
        long times = 0;
        init_noted(s, pid, &times);
        if (times != 1) fail_msg("the initializer ran %ld times in process %d", times, pid);
    }
}

/* The initializer runs in each of the 3 worker processes before create
 * returns, once; every task runs in one of those processes. */
static void test_initializer_in_workers(void **state) {
    (void)state;
    shared *s = shared_new();
    crew_pool *p = init_pool(s, 3, 0, 0);
    assert_int_equal(atomic_load(&s->ninit), 3);
    check_init_pids(s);
    for (int i = 0; i < 3; i++) assert_int_equal(ppid_of(atomic_load(&s->init_pids[i])), getpid());
    enum { N = 60 };
    crew_future *f[N];
    for (int i = 0; i < N; i++) f[i] = submit_item(p, s, i, ACT_PID, 0);
    for (int i = 0; i < N; i++) {
        int64_t pid = 0;
        ASSERT_RC(crew_future_get(f[i], &pid, LONG_WAIT), 0);
        crew_future_free(f[i]);
        if (!init_noted(s, pid, NULL)) fail_msg("task %d ran in process %lld, never initialized", i, (long long)pid);
    }
    assert_int_equal(atomic_load(&s->ninit), 3);
    pool_end(p);
    assert_int_equal(atomic_load(&s->ninit), 3);
    assert_clean(s);
    shared_free(s);
}

/* A replacement process runs the initializer too, once, before its first
 * task: after a death, and after recycling (max_tasks_per_child). */
static void test_initializer_on_replacements(void **state) {
    (void)state;
    shared *s = shared_new();
    crew_pool *p = init_pool(s, 1, 0, 0);
    int64_t a = 0, b = 0;
    crew_future *f = submit_item(p, s, 0, ACT_PID, 0);
    ASSERT_RC(crew_future_get(f, &a, LONG_WAIT), 0);
    crew_future_free(f);
    assert_int_equal(atomic_load(&s->ninit), 1);
    assert_int_equal(atomic_load(&s->init_pids[0]), a);
    f = submit_item(p, s, 0, ACT_EXIT, 0);
    ASSERT_RC(crew_future_get(f, NULL, LONG_WAIT), CREW_EWORKERDIED);
    crew_future_free(f);
    f = submit_item(p, s, 0, ACT_PID, 0);
    ASSERT_RC(crew_future_get(f, &b, LONG_WAIT), 0);
    crew_future_free(f);
    assert_int_not_equal(a, b);
    assert_int_equal(atomic_load(&s->ninit), 2);
    assert_int_equal(atomic_load(&s->init_pids[1]), b);
    pool_end(p);

    /* Recycling every 2 calls: 7 sequential submits, 4 processes. */
    long before = atomic_load(&s->ninit);
    p = init_pool(s, 1, 2, 0);
    assert_int_equal(atomic_load(&s->ninit), before + 1);
    for (int i = 0; i < 7; i++) {
        int64_t pid = 0;
        f = submit_item(p, s, 0, ACT_PID, 0);
        ASSERT_RC(crew_future_get(f, &pid, LONG_WAIT), 0);
        crew_future_free(f);
        assert_int_equal(atomic_load(&s->ninit), before + 1 + i / 2);
        assert_int_equal(atomic_load(&s->init_pids[before + i / 2]), pid);
    }
    pool_end(p);
    check_init_pids(s);
    assert_clean(s);
    shared_free(s);
}

/* A replacement process killed while it runs its initializer (before it
 * took the item it was started for) is one more death, not one of the
 * item's attempts used up: the pool starts another, and the item, which
 * died once with retries 3, succeeds. */
static void test_replacement_killed_in_initializer(void **state) {
    (void)state;
    shared *s = shared_new();
    atomic_store(&s->init_block_at, 2); /* the first replacement */
    crew_pool *p = init_pool(s, 1, 0, 3);
    crew_future *f = submit_item(p, s, 9, ACT_EXIT_ONCE, 0);
    int pid = wait_blocked_pid(s);
    assert_int_equal(atomic_load(&s->ninit), 2);
    assert_false(crew_future_done(f));
    assert_int_equal(kill(pid, SIGKILL), 0);
    int64_t got = 0;
    ASSERT_RC(crew_future_get(f, &got, LONG_WAIT), 0);
    crew_future_free(f);
    assert_int_equal(got, f_of(9));
    assert_int_equal(atomic_load(&s->ninit), 3);
    int last = 0;
    size_t deaths = crew_pool_worker_deaths(p, &last);
    assert_int_equal(deaths, 2);
    assert_int_equal(last, -SIGKILL);
    get_val(submit_item(p, s, 10, ACT_NONE, 0), f_of(10));
    pool_end(p);
    assert_clean(s);
    shared_free(s);
}

/* An initializer that fails (in every worker, or in the second to run
 * only) makes crew_pool_create fail with its code, and no child process is
 * left by the time it returns. One whose process dies in it (the second to
 * run calls _exit) makes create fail too (with some error code), leaving no
 * child either. */
static void test_initializer_fails_no_child(void **state) {
    (void)state;
    for (int round = 0; round < 3; round++) {
        shared *s = shared_new();
        if (round < 2) atomic_store(&s->init_fail_at, round == 0 ? -1 : 2);
        else atomic_store(&s->init_die_at, 2);
        crew_pool_options o = {.kind = CREW_PROCESSES, .workers = 3, .initializer = init_note,
                               .initarg = s};
        crew_pool *p = NULL;
        int rc = crew_pool_create(&p, &o);
        if (round < 2) ASSERT_RC(rc, CREW_EACCES);
        else if (rc >= 0) fail_msg("create returned %d (%s) though a worker died", rc, crew_err_name(rc));
        assert_true(atomic_load(&s->ninit) >= (round == 0 ? 1 : 2));
        assert_no_children(); /* at once */
        assert_clean(s);
        shared_free(s);
    }
}

/* -------------------------------------------------------------- terminate */

/* terminate with two tasks running (blocked for BLOCK_WAIT) and twenty
 * pending, plus a map in progress: the running ones fail with
 * CREW_ECANCELED at once (their processes are killed), the pending ones are
 * cancelled, the map ends with CREW_ECANCELED, and join returns promptly. */
static void test_terminate_kills_running(void **state) {
    (void)state;
    shared *s = shared_new();
    crew_pool *p = proc_pool(2, 0, 0, s);
    crew_future *run[2];
    for (int i = 0; i < 2; i++) run[i] = submit_item(p, s, i, ACT_BLOCK, 0);
    assert_true(TEST_WAIT_UNTIL(atomic_load(&s->started) == 2, LONG_WAIT));
    assert_true(TEST_WAIT_UNTIL(crew_future_running(run[0]) && crew_future_running(run[1]), LONG_WAIT));
    int wpids[2] = {atomic_load(&s->pids[0]), atomic_load(&s->pids[1])};
    assert_int_equal(pid_count(s), 2);
    enum { P = 20 };
    crew_future *pend[P];
    for (int i = 0; i < P; i++) pend[i] = submit_item(p, s, i, ACT_NONE, 0);
    item in[50];
    int64_t out[50];
    for (int i = 0; i < 50; i++) in[i] = (item){i, ACT_NONE, 0};
    crew_map m = {.fn = t_item, .in = in, .in_size = sizeof *in, .out = out, .out_size = sizeof *out,
                  .count = 50, .ctx = s, .chunk_size = 1};
    crew_future *fm = NULL;
    ASSERT_RC(crew_pool_map_async(p, &m, &fm), 0);

    double t0 = test_now();
    ASSERT_RC(crew_pool_terminate(p), 0);
    for (int i = 0; i < 2; i++) {
        ASSERT_RC(crew_future_get(run[i], NULL, PROMPT), CREW_ECANCELED);
        crew_future_free(run[i]);
    }
    for (int i = 0; i < P; i++) {
        ASSERT_RC(crew_future_get(pend[i], NULL, PROMPT), CREW_ECANCELED);
        assert_true(crew_future_cancelled(pend[i]));
        crew_future_free(pend[i]);
    }
    ASSERT_RC(crew_future_get(fm, NULL, PROMPT), CREW_ECANCELED);
    crew_future_free(fm);
    ASSERT_RC(crew_pool_join(p, PROMPT), 0);
    double took = test_now() - t0;
    if (took > PROMPT) fail_msg("terminate and join took %.2f s", took);
    assert_int_equal(atomic_load(&s->done), 0); /* no pending task ran */
    for (int i = 0; i < 2; i++) assert_pid_gone(wpids[i], 0, "terminated worker");
    crew_pool_free(p);
    assert_clean(s);
    shared_free(s);
}

/* ----------------------------------------------------------- memory rules */

typedef struct where {
    uintptr_t *in_at, *out_at; /* the pointers each item got, by index */
    int32_t *in_shared, *out_shared;
} where;

/* ctx: a `where` in the arena. Records where its in and out were, writes
 * f(in). */
static int t_where(const void *in, void *out, void *ctx) {
    where *w = ctx;
    size_t i = crew_pool_task_index();
    int64_t v;
    memcpy(&v, in, sizeof v);
    w->in_at[i] = (uintptr_t)in;
    w->out_at[i] = (uintptr_t)out;
    w->in_shared[i] = crew_shm_contains(in);
    w->out_shared[i] = crew_shm_contains(out);
    v = f_of(v);
    memcpy(out, &v, sizeof v);
    return 0;
}

static where *where_new(size_t n) {
    where *w = crew_shm_alloc(sizeof *w);
    assert_non_null(w);
    w->in_at = crew_shm_alloc(n * sizeof *w->in_at);
    w->out_at = crew_shm_alloc(n * sizeof *w->out_at);
    w->in_shared = crew_shm_alloc(n * sizeof *w->in_shared);
    w->out_shared = crew_shm_alloc(n * sizeof *w->out_shared);
    assert_true(w->in_at && w->out_at && w->in_shared && w->out_shared);
    return w;
}

static void where_free(where *w) {
    crew_shm_free(w->in_at);
    crew_shm_free(w->out_at);
    crew_shm_free(w->in_shared);
    crew_shm_free(w->out_shared);
    crew_shm_free(w);
}

/* A map over 2000 items with in and out in the arena or in ordinary memory
 * (each combination): arena arrays are handed to the tasks as they are (the
 * task's pointers are the arrays' own, and what it writes there is what the
 * parent reads); ordinary arrays go through copies in the arena, and the
 * results come back. */
static void test_memory_arena_in_place(void **state) {
    (void)state;
    enum { N = 2000 };
    crew_pool *p = proc_pool(2, 0, 0, NULL);
    where *w = where_new(N);
    /* A borrowed input (in_size 0) in the arena: the same pointer. The
     * pool's first submission has task index 0. */
    int64_t *one = crew_shm_alloc(sizeof *one);
    assert_non_null(one);
    *one = 41;
    crew_task t = {.fn = t_where, .in = one, .in_size = 0, .out_size = sizeof(int64_t), .ctx = w};
    crew_future *f = NULL;
    ASSERT_RC(crew_pool_submit(p, &t, &f), 0);
    int64_t got = 0;
    ASSERT_RC(crew_future_get(f, &got, LONG_WAIT), 0);
    crew_future_free(f);
    assert_int_equal(got, f_of(41));
    assert_int_equal(w->in_at[0], (uintptr_t)one);
    assert_int_equal(w->in_shared[0], 1);
    crew_shm_free(one);
    for (int round = 0; round < 4; round++) {
        bool in_arena = round & 1, out_arena = round & 2;
        int64_t *in = in_arena ? crew_shm_alloc(N * sizeof *in) : malloc(N * sizeof *in);
        int64_t *out = out_arena ? crew_shm_alloc(N * sizeof *out) : malloc(N * sizeof *out);
        assert_true(in && out);
        for (int i = 0; i < N; i++) {
            in[i] = i * 5 + 2;
            out[i] = -1;
            w->in_at[i] = w->out_at[i] = 0;
        }
        crew_map m = {.fn = t_where, .in = in, .in_size = sizeof *in, .out = out,
                      .out_size = sizeof *out, .count = N, .ctx = w, .chunk_size = round == 3 ? 0 : 16};
        ASSERT_RC(crew_pool_map(p, &m), 0);
        for (int i = 0; i < N; i++) {
            assert_int_equal(out[i], f_of(i * 5 + 2));
            /* Every item ran in a worker, in arena memory either way. */
            assert_true(w->in_shared[i] && w->out_shared[i]);
            if (in_arena) assert_int_equal(w->in_at[i], (uintptr_t)&in[i]);
            else assert_int_not_equal(w->in_at[i], (uintptr_t)&in[i]);
            if (out_arena) assert_int_equal(w->out_at[i], (uintptr_t)&out[i]);
            else assert_int_not_equal(w->out_at[i], (uintptr_t)&out[i]);
        }
        if (in_arena) crew_shm_free(in);
        else free(in);
        if (out_arena) crew_shm_free(out);
        else free(out);
    }
    pool_end(p);
    where_free(w);
    assert_clean(NULL);
}

/* A ctx that points to a global set before the pool was created is read in
 * the tasks; a task's write to ordinary memory stays in its process. */
static int64_t g_table[8];
static int64_t g_scratch;

static int t_global_ctx(const void *in, void *out, void *ctx) {
    const int64_t *tab = ctx;
    int64_t v, sum = 0;
    memcpy(&v, in, sizeof v);
    for (int k = 0; k < 8; k++) sum += tab[k];
    g_scratch = 777; /* in the worker's copy only */
    v = v + sum;
    memcpy(out, &v, sizeof v);
    return 0;
}

static void test_memory_global_ctx(void **state) {
    (void)state;
    int64_t sum = 0;
    for (int k = 0; k < 8; k++) sum += g_table[k] = (k + 1) * 1000;
    crew_pool *p = proc_pool(2, 0, 0, NULL);
    enum { N = 500 };
    int64_t in[N], out[N];
    for (int i = 0; i < N; i++) in[i] = i;
    crew_map m = {.fn = t_global_ctx, .in = in, .in_size = sizeof *in, .out = out,
                  .out_size = sizeof *out, .count = N, .ctx = g_table, .chunk_size = 7};
    ASSERT_RC(crew_pool_map(p, &m), 0);
    for (int i = 0; i < N; i++) assert_int_equal(out[i], i + sum);
    assert_int_equal(g_scratch, 0);
    pool_end(p);
    assert_clean(NULL);
}

/* ------------------------------------------------------ Ctrl-C / SIGTERM */

typedef struct cc_page {
    crew_event gate;          /* never set */
    _Atomic long npids;
    _Atomic int pids[64];
    _Atomic int stage;        /* the child: 1 pool created, 2 map started */
} cc_page;

static int t_cc(const void *in, void *out, void *ctx) {
    cc_page *pg = ctx;
    pid_t me = getpid();
    if (noted_pid != me) {
        noted_pid = me;
        long k = atomic_fetch_add(&pg->npids, 1);
        if (k < 64) atomic_store(&pg->pids[k], (int)me);
    }
    memcpy(out, in, sizeof(int64_t));
    return crew_event_wait(&pg->gate, BLOCK_WAIT) == 0 ? 0 : CREW_ETIMEDOUT;
}

/* The program under test: a process pool running a long map. */
static int cc_child(void *arg) {
    cc_page *pg = arg;
    crew_pool_options o = {.kind = CREW_PROCESSES, .workers = 2};
    crew_pool *p = NULL;
    CHILD_RC(crew_pool_create(&p, &o), 0);
    atomic_store(&pg->stage, 1);
    enum { N = 1000 };
    static int64_t in[N], out[N];
    crew_map m = {.fn = t_cc, .in = in, .in_size = sizeof *in, .out = out, .out_size = sizeof *out,
                  .count = N, .ctx = pg, .chunk_size = 1};
    atomic_store(&pg->stage, 2);
    crew_pool_map(p, &m);
    return 20; /* never gets here: killed first */
}

static size_t shm_listing(char names[][NAME_MAX + 1], size_t max) {
    DIR *d = opendir("/dev/shm");
    if (d == NULL) return 0;
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        if (n < max) snprintf(names[n], NAME_MAX + 1, "%s", e->d_name);
        n++;
    }
    closedir(d);
    return n < max ? n : max;
}

/* Processes whose parent is `pid`. */
static size_t children_of(int pid) {
    DIR *d = opendir("/proc");
    assert_non_null(d);
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
        if (ppid_of(atoi(e->d_name)) == pid) n++;
    }
    closedir(d);
    return n;
}

/* Signal a program whose process pool runs a map; it dies of the signal,
 * its workers die with it (PR_SET_PDEATHSIG), within a few seconds, leaving
 * no orphan, no zombie and nothing new in /dev/shm.
 *
 * This test process makes itself a child subreaper, so orphans of the
 * program come to it rather than to init (which, in a container, may never
 * reap them): each worker must then arrive here dead of SIGKILL, and
 * nothing else may. /dev/shm is compared before and after; names made by
 * other test programs that may run at the same time ("crew-test-*") are
 * not counted (crew itself never names a segment: the arena is a memfd). */
static void ctrl_c_case(int sig) {
    assert_int_equal(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
    enum { MAXN = 4096 };
    static char before[MAXN][NAME_MAX + 1], after[MAXN][NAME_MAX + 1];
    size_t nb = shm_listing(before, MAXN);

    cc_page *pg = shm_map(sizeof *pg);
    ASSERT_RC(crew_event_init(&pg->gate, CREW_SHARED), 0);
    pid_t child = fork_child(cc_child, pg);
    /* Both workers are running map items. */
    if (!TEST_WAIT_UNTIL(atomic_load(&pg->npids) >= 2, LONG_WAIT)) {
        kill(child, SIGKILL);
        reap(child);
        fail_msg("the workers never ran (stage %d)", atomic_load(&pg->stage));
    }
    int wp[2] = {atomic_load(&pg->pids[0]), atomic_load(&pg->pids[1])};
    assert_int_not_equal(wp[0], wp[1]);
    for (int i = 0; i < 2; i++) assert_int_equal(ppid_of(wp[i]), child);
    assert_true(children_of(child) >= 2);

    assert_int_equal(kill(child, sig), 0);
    int st = reap(child);
    if (!(WIFSIGNALED(st) && WTERMSIG(st) == sig))
        fail_msg("the program ended with status 0x%x, not by signal %d", st, sig);

    /* Orphans come here: exactly the two workers, killed. */
    bool got[2] = {false, false};
    double deadline = test_now() + 10.0;
    while (!(got[0] && got[1]) && test_now() < deadline) {
        int wst = 0;
        pid_t r = waitpid(-1, &wst, WNOHANG);
        if (r == 0) {
            struct timespec ts = {0, 1000000};
            nanosleep(&ts, NULL);
            continue;
        }
        if (r < 0) break; /* ECHILD: nothing (else) came here */
        int k = r == wp[0] ? 0 : r == wp[1] ? 1 : -1;
        if (k < 0) fail_msg("an unexpected orphan %d of the program (status 0x%x)", (int)r, wst);
        if (!(WIFSIGNALED(wst) && WTERMSIG(wst) == SIGKILL))
            fail_msg("worker %d ended with status 0x%x, not SIGKILL", (int)r, wst);
        got[k] = true;
    }
    int survivor = 0;
    for (int i = 0; i < 2; i++) {
        if (got[i] || TEST_WAIT_UNTIL(pid_gone(wp[i], child), SETTLE)) continue;
        survivor = wp[i];
    }
    if (survivor != 0) {
        /* Survivors came here (we are their subreaper): kill and reap them
         * all, so that none outlives the test holding its output. */
        for (int i = 0; i < 2; i++)
            if (!got[i] && ppid_of(wp[i]) == getpid()) {
                kill(wp[i], SIGKILL);
                waitpid(wp[i], NULL, 0);
            }
        fail_msg("worker %d of the signalled program outlived it", survivor);
    }
    assert_int_equal(children_of(child), 0);
    assert_no_children();

    size_t na = shm_listing(after, MAXN);
    for (size_t i = 0; i < na; i++) {
        if (strncmp(after[i], "crew-test-", 10) == 0) continue;
        bool old = false;
        for (size_t j = 0; j < nb && !old; j++) old = strcmp(after[i], before[j]) == 0;
        if (!old) fail_msg("/dev/shm/%s appeared and was left behind", after[i]);
    }
    /* The killed workers still count as the gate's waiters: not destroyed. */
    shm_unmap(pg, sizeof *pg);
}

static void test_sigint_leaves_nothing(void **state) {
    (void)state;
    ctrl_c_case(SIGINT);
}

static void test_sigterm_leaves_nothing(void **state) {
    (void)state;
    ctrl_c_case(SIGTERM);
}

/* ------------------------------------------------------------------ stress */

/* Stress: 3 worker processes (retries KILLS + 5, recycled every 500
 * calls) serve at once a map with arena arrays (automatic chunks), a map
 * with ordinary arrays (chunk 1), an ordered imap (chunk 4), an unordered
 * imap (chunk 1) and submits (256 in flight), from five threads, while the
 * main thread SIGKILLs a random worker process KILLS times, each when the
 * count of items done passes a random mark (seed printed; CREW_TEST_SEED
 * repeats a run). Only processes that have run a task are killed (one
 * killed in its initializer is test_replacement_killed_in_initializer's
 * case). Every item has a global id; runs[id] counts its executions.
 * Checks: every result arrives exactly once with the right value, every
 * item ran at least once, re-runs are no more than the deaths (a death
 * re-runs at most the item it held), deaths no more than the kills. */
enum { ST_MAPA, ST_MAPB, ST_IMAP, ST_IMAPU, ST_SUB, ST_N };

typedef struct stress {
    crew_pool *pool;
    shared *s;
    _Atomic int32_t *runs;   /* arena, per id */
    size_t n[ST_N], base[ST_N], total;
    _Atomic long errors;
    _Atomic int finished;
    char msg[256];
} stress;

typedef struct sitem {
    int64_t id;
} sitem;

static int t_stress(const void *in, void *out, void *ctx) {
    stress *st = ctx; /* copied to the arena before the pool */
    sitem it;
    memcpy(&it, in, sizeof it);
    note_pid(st->s);
    atomic_fetch_add(&st->runs[it.id], 1);
    atomic_fetch_add(&st->s->done, 1);
    int64_t r = f_of(it.id);
    memcpy(out, &r, sizeof r);
    return 0;
}

static void st_err(stress *st, const char *what, long a, long b) {
    if (atomic_fetch_add(&st->errors, 1) == 0)
        snprintf(st->msg, sizeof st->msg, "%s (%ld, %ld)", what, a, b);
}

typedef struct st_job {
    stress *st;
    int which;
    pthread_t th;
} st_job;

static void *st_main(void *arg) {
    st_job *j = arg;
    stress *st = j->st;
    size_t n = st->n[j->which], base = st->base[j->which];
    switch (j->which) {
    case ST_MAPA:
    case ST_MAPB: {
        bool arena = j->which == ST_MAPA;
        sitem *in = arena ? crew_shm_alloc(n * sizeof *in) : malloc(n * sizeof *in);
        int64_t *out = arena ? crew_shm_alloc(n * sizeof *out) : malloc(n * sizeof *out);
        if (!in || !out) {
            st_err(st, "alloc", 0, 0);
            break;
        }
        for (size_t i = 0; i < n; i++) {
            in[i].id = (int64_t)(base + i);
            out[i] = -1;
        }
        crew_map m = {.fn = t_stress, .in = in, .in_size = sizeof *in, .out = out,
                      .out_size = sizeof *out, .count = n, .ctx = st, .chunk_size = arena ? 0 : 1};
        int rc = crew_pool_map(st->pool, &m);
        if (rc != 0) st_err(st, "map failed", j->which, rc);
        for (size_t i = 0; i < n && rc == 0; i++)
            if (out[i] != f_of((int64_t)(base + i))) {
                st_err(st, "map output wrong", (long)i, (long)out[i]);
                break;
            }
        if (arena) {
            crew_shm_free(in);
            crew_shm_free(out);
        } else {
            free(in);
            free(out);
        }
        break;
    }
    case ST_IMAP:
    case ST_IMAPU: {
        bool unordered = j->which == ST_IMAPU;
        sitem *in = malloc(n * sizeof *in);
        unsigned char *seen = calloc(n, 1);
        if (!in || !seen) {
            st_err(st, "alloc", 0, 0);
            free(in);
            free(seen);
            break;
        }
        for (size_t i = 0; i < n; i++) in[i].id = (int64_t)(base + i);
        crew_imap im = {.fn = t_stress, .ctx = st, .in = in, .count = n, .in_size = sizeof *in,
                        .out_size = sizeof(int64_t), .unordered = unordered,
                        .chunk_size = unordered ? 1 : 4};
        crew_imap_iter *it = NULL;
        int rc = crew_pool_imap(st->pool, &im, &it);
        if (rc != 0) {
            st_err(st, "imap start", rc, 0);
            free(in);
            free(seen);
            break;
        }
        for (size_t k = 0; k < n; k++) {
            int64_t v = -1;
            size_t idx = SIZE_MAX;
            rc = crew_imap_next(it, &v, &idx, LONG_WAIT * 2);
            if (rc != 0 || idx >= n || (!unordered && idx != k) || seen[idx] ||
                v != f_of((int64_t)(base + idx))) {
                st_err(st, "imap result", rc, (long)idx);
                break;
            }
            seen[idx] = 1;
        }
        if (rc == 0 && crew_imap_next(it, NULL, NULL, LONG_WAIT) != CREW_EOF)
            st_err(st, "imap: more results than items", 0, 0);
        crew_imap_free(it);
        free(in);
        free(seen);
        break;
    }
    case ST_SUB: {
        enum { FLIGHT = 256 };
        crew_future *ring[FLIGHT] = {NULL};
        size_t ids[FLIGHT];
        for (size_t i = 0; i < n + FLIGHT; i++) {
            size_t slot = i % FLIGHT;
            if (ring[slot] != NULL) {
                int64_t v = -1;
                int rc = crew_future_get(ring[slot], &v, LONG_WAIT * 2);
                if (rc != 0 || v != f_of((int64_t)(base + ids[slot])))
                    st_err(st, "submit result", rc, (long)ids[slot]);
                crew_future_free(ring[slot]);
                ring[slot] = NULL;
            }
            if (i < n) {
                sitem it = {(int64_t)(base + i)};
                crew_task t = {.fn = t_stress, .in = &it, .in_size = sizeof it,
                               .out_size = sizeof(int64_t), .ctx = st};
                int rc = crew_pool_submit(st->pool, &t, &ring[slot]);
                if (rc != 0) {
                    st_err(st, "submit", rc, (long)i);
                    ring[slot] = NULL;
                }
                ids[slot] = i;
            }
        }
        break;
    }
    default:
        break;
    }
    atomic_fetch_add(&st->finished, 1);
    return NULL;
}

/* Kill one worker process that has run a task, chosen with `r`; whether one
 * was killed. */
static bool kill_random_worker(stress *st, uint64_t r) {
    crew_process *list[32];
    size_t n = crew_process_children(list, 32);
    if (n > 32) n = 32;
    size_t eligible[32], ne = 0;
    for (size_t i = 0; i < n; i++)
        if (pid_noted(st->s, crew_process_pid(list[i]))) eligible[ne++] = i;
    bool killed = false;
    if (ne > 0) killed = crew_process_kill(list[eligible[r % ne]]) == 0;
    for (size_t i = 0; i < n; i++) crew_process_free(list[i]);
    return killed;
}

static uint64_t xorshift(uint64_t *x) {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

static void test_stress_kills(void **state) {
    (void)state;
    double t0 = test_now();
    uint64_t seed = (uint64_t)now_ns() | 1;
    const char *env = getenv("CREW_TEST_SEED");
    if (env) seed = strtoull(env, NULL, 0) | 1;
    printf("stress seed %llu (CREW_TEST_SEED)\n", (unsigned long long)seed);
    uint64_t rng = seed;

    stress *st = crew_shm_alloc(sizeof *st);
    assert_non_null(st);
    st->s = shared_new();
    st->n[ST_MAPA] = (size_t)test_scaled(1000000);
    st->n[ST_MAPB] = (size_t)test_scaled(100000);
    st->n[ST_IMAP] = (size_t)test_scaled(100000);
    st->n[ST_IMAPU] = (size_t)test_scaled(100000);
    st->n[ST_SUB] = (size_t)test_scaled(50000);
    for (int k = 0; k < ST_N; k++) {
        st->base[k] = st->total;
        st->total += st->n[k];
    }
    st->runs = crew_shm_alloc(st->total * sizeof *st->runs);
    assert_non_null(st->runs);
    enum { KILLS = 20 };
    crew_pool_options o = {.kind = CREW_PROCESSES, .workers = 3, .retries = KILLS + 5,
                           .max_tasks_per_child = 500};
    ASSERT_RC(crew_pool_create(&st->pool, &o), 0);

    long marks[KILLS];
    for (int k = 0; k < KILLS; k++)
        marks[k] = (long)(st->total / 20 + xorshift(&rng) % (st->total * 7 / 10));
    for (int a = 0; a < KILLS; a++) /* sort */
        for (int b = a + 1; b < KILLS; b++)
            if (marks[b] < marks[a]) {
                long t = marks[a];
                marks[a] = marks[b];
                marks[b] = t;
            }

    st_job jobs[ST_N];
    for (int k = 0; k < ST_N; k++) {
        jobs[k] = (st_job){.st = st, .which = k};
        th_start(&jobs[k].th, st_main, &jobs[k]);
    }
    size_t kills = 0;
    for (int k = 0; k < KILLS; k++) {
        bool ok = TEST_WAIT_UNTIL(atomic_load(&st->s->done) >= marks[k] ||
                                      atomic_load(&st->finished) == ST_N,
                                  LONG_WAIT * 3);
        if (!ok || atomic_load(&st->finished) == ST_N) break;
        /* A worker may be between processes: try a few times. */
        bool killed = false;
        TEST_WAIT_UNTIL((killed = kill_random_worker(st, xorshift(&rng))) ||
                            atomic_load(&st->finished) == ST_N,
                        LONG_WAIT);
        kills += killed;
    }
    for (int k = 0; k < ST_N; k++) th_join(jobs[k].th);
    int last = 0;
    size_t deaths = crew_pool_worker_deaths(st->pool, &last);
    pool_end(st->pool);

    if (atomic_load(&st->errors) != 0) fail_msg("%ld errors, first: %s", atomic_load(&st->errors), st->msg);
    long extra = 0;
    for (size_t i = 0; i < st->total; i++) {
        int32_t r = atomic_load(&st->runs[i]);
        if (r < 1) fail_msg("item %zu never ran", i);
        extra += r - 1;
    }
    printf("stress: %zu items, %zu kills, %zu deaths (last %d), %ld re-runs, %zu processes, %.1f s\n",
           st->total, kills, deaths, last, extra, pid_count(st->s), test_now() - t0);
    assert_true(kills >= 1);
    assert_true(deaths >= 1 && deaths <= kills);
    assert_int_equal(last, -SIGKILL);
    assert_true(extra <= (long)deaths);
    assert_clean(st->s);
    crew_shm_free(st->runs);
    shared_free(st->s);
    crew_shm_free(st);
}

/* ------------------------------------------------------------------- main */

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_task_segfaults),
        cmocka_unit_test(test_task_exits),
        cmocka_unit_test(test_task_killed_from_outside),
        cmocka_unit_test(test_deaths_counted),
        cmocka_unit_test(test_retries_enough),
        cmocka_unit_test(test_retries_too_few),
        cmocka_unit_test(test_map_item_kills_itself),
        cmocka_unit_test(test_map_worker_killed_from_outside),
        cmocka_unit_test(test_map_death_retried),
        cmocka_unit_test(test_idle_worker_killed),
        cmocka_unit_test(test_imap_item_kills_worker),
        cmocka_unit_test(test_for_reduce_death),
        cmocka_unit_test(test_max_tasks_one),
        cmocka_unit_test(test_max_tasks_counts),
        cmocka_unit_test(test_initializer_in_workers),
        cmocka_unit_test(test_initializer_on_replacements),
        cmocka_unit_test(test_replacement_killed_in_initializer),
        cmocka_unit_test(test_initializer_fails_no_child),
        cmocka_unit_test(test_terminate_kills_running),
        cmocka_unit_test(test_memory_arena_in_place),
        cmocka_unit_test(test_memory_global_ctx),
        cmocka_unit_test(test_sigint_leaves_nothing),
        cmocka_unit_test(test_sigterm_leaves_nothing),
        cmocka_unit_test(test_stress_kills),
    };
    return test_run_forked("test_pool_proc", tests, sizeof tests / sizeof tests[0]);
}
