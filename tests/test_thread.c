/* Tests for thread.h: start/join/free, names and ids, active_count and
 * enumerate, stack size, daemon threads and joining at exit, timers, and
 * thread handles in a forked child.
 *
 * cmocka's assertions work only on the test's own thread, so thread bodies
 * record what they see in their context and the test asserts on it after
 * joining. Forked children report through their exit status. Nothing sleeps
 * to wait for another thread: threads block on crew_events, and the test
 * waits on conditions with generous deadlines. */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "crew/clock.h"
#include "crew/error.h"
#include "crew/sync.h"
#include "crew/thread.h"
#include "test_util.h"

/* Generous bound for "promptly" on a loaded 2-core machine. */
#define PROMPT 10.0

static long os_tid(void) {
    return (long)syscall(SYS_gettid);
}

/* Threads of this process as the kernel counts them. */
static int os_thread_count(void) {
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return -1;
    char line[256];
    int n = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "Threads: %d", &n) == 1)
            break;
    fclose(f);
    return n;
}

/* Threads when no test thread runs: the main thread, plus ThreadSanitizer's
 * background thread, which its first pthread_create starts (main starts one
 * up front so the count is fixed from then on). */
#ifdef TEST_TSAN
enum { baseline_threads = 2 };
#else
enum { baseline_threads = 1 };
#endif

/* Before forking a child that starts threads: every thread of earlier tests
 * (detached ones included) has really gone, so the fork is single-threaded. */
static void wait_single_threaded(void) {
    if (!TEST_WAIT_UNTIL(os_thread_count() == baseline_threads, PROMPT))
        fail_msg("%d threads running, %d at startup", os_thread_count(), baseline_threads);
}

/* Every test starts and ends with only the main thread alive. */
static int check_only_main(void **state) {
    (void)state;
    return TEST_WAIT_UNTIL(crew_thread_active_count() == 1, PROMPT) ? 0 : -1;
}

/* ------------------------------------------------------------ thread bodies */

static int return_arg(void *arg) {
    return (int)(intptr_t)arg;
}

/* Blocks on `go`, then returns `result`. */
typedef struct gate {
    crew_event go;
    atomic_int started;
    int result;
} gate;

static void gate_init(gate *g, int result) {
    assert_int_equal(crew_event_init(&g->go, 0), 0);
    atomic_init(&g->started, 0);
    g->result = result;
}

static void gate_destroy(gate *g) {
    assert_int_equal(crew_event_destroy(&g->go), 0);
}

static int wait_gate(void *arg) {
    gate *g = arg;
    atomic_fetch_add(&g->started, 1);
    if (crew_event_wait(&g->go, 60.0) != 0)
        return -9999;
    return g->result;
}

/* ---------------------------------------------------------- start and join */

static void test_start_join_result(void **state) {
    (void)state;
    crew_thread *t = NULL;
    assert_int_equal(crew_thread_start(&t, return_arg, (void *)(intptr_t)42, NULL), 0);
    assert_non_null(t);
    int result = 0;
    assert_int_equal(crew_thread_join(t, CREW_FOREVER, &result), 0);
    assert_int_equal(result, 42);
    assert_false(crew_thread_is_alive(t));
    /* Joining again gives the same result at once. */
    result = 0;
    assert_int_equal(crew_thread_join(t, 0, &result), 0);
    assert_int_equal(result, 42);
    assert_int_equal(crew_thread_join(t, CREW_FOREVER, NULL), 0);
    crew_thread_free(t);

    /* Negative results travel too. */
    assert_int_equal(crew_thread_start(&t, return_arg, (void *)(intptr_t)CREW_EPIPE, NULL), 0);
    assert_int_equal(crew_thread_join(t, 30.0, &result), 0);
    assert_int_equal(result, CREW_EPIPE);
    crew_thread_free(t);
}

static void test_join_timeout(void **state) {
    (void)state;
    gate g;
    gate_init(&g, 7);
    crew_thread *t = NULL;
    assert_int_equal(crew_thread_start(&t, wait_gate, &g, NULL), 0);
    assert_true(crew_thread_is_alive(t));

    int result = 12345;
    double t0 = test_now();
    assert_int_equal(crew_thread_join(t, 0.1, &result), CREW_ETIMEDOUT);
    double dt = test_now() - t0;
    assert_true(dt >= 0.1 - 1e-6);
    assert_true(dt < PROMPT);
    assert_int_equal(result, 12345); /* untouched on failure */

    t0 = test_now();
    assert_int_equal(crew_thread_join(t, 0, &result), CREW_ETIMEDOUT);
    assert_true(test_now() - t0 < PROMPT);
    assert_true(crew_thread_is_alive(t));

    assert_int_equal(crew_thread_join(t, -1, &result), CREW_EINVAL);
    assert_int_equal(crew_thread_join(t, NAN, &result), CREW_EINVAL);

    assert_int_equal(crew_event_set(&g.go), 0);
    assert_int_equal(crew_thread_join(t, CREW_FOREVER, &result), 0);
    assert_int_equal(result, 7);
    assert_false(crew_thread_is_alive(t));
    crew_thread_free(t);
    gate_destroy(&g);
}

/* A thread that finishes on its own: a 0-timeout join succeeds once it has. */
static void test_join_zero_after_finish(void **state) {
    (void)state;
    crew_thread *t = NULL;
    assert_int_equal(crew_thread_start(&t, return_arg, (void *)(intptr_t)5, NULL), 0);
    int result = 0;
    assert_true(TEST_WAIT_UNTIL(!crew_thread_is_alive(t), PROMPT));
    assert_int_equal(crew_thread_join(t, 0, &result), 0);
    assert_int_equal(result, 5);
    crew_thread_free(t);
}

typedef struct joiner_ctx {
    crew_thread *target;
    atomic_int *ready;
    int rc;
    int result;
} joiner_ctx;

static int joiner(void *arg) {
    joiner_ctx *j = arg;
    atomic_fetch_add(j->ready, 1);
    j->rc = crew_thread_join(j->target, 60.0, &j->result);
    return 0;
}

static void test_many_joiners(void **state) {
    (void)state;
    enum { NJ = 4 };
    gate g;
    gate_init(&g, 99);
    crew_thread *target = NULL;
    assert_int_equal(crew_thread_start(&target, wait_gate, &g, NULL), 0);

    atomic_int ready;
    atomic_init(&ready, 0);
    joiner_ctx ctx[NJ];
    crew_thread *js[NJ];
    for (int i = 0; i < NJ; i++) {
        ctx[i] = (joiner_ctx){ .target = target, .ready = &ready, .rc = 1, .result = 0 };
        assert_int_equal(crew_thread_start(&js[i], joiner, &ctx[i], NULL), 0);
    }
    assert_true(TEST_WAIT_UNTIL(atomic_load(&ready) == NJ, PROMPT));
    /* The main thread joins too, with a timeout that expires. */
    assert_int_equal(crew_thread_join(target, 0.01, NULL), CREW_ETIMEDOUT);
    assert_int_equal(crew_event_set(&g.go), 0);
    for (int i = 0; i < NJ; i++) {
        assert_int_equal(crew_thread_join(js[i], CREW_FOREVER, NULL), 0);
        assert_int_equal(ctx[i].rc, 0);
        assert_int_equal(ctx[i].result, 99);
        crew_thread_free(js[i]);
    }
    int result = 0;
    assert_int_equal(crew_thread_join(target, CREW_FOREVER, &result), 0);
    assert_int_equal(result, 99);
    crew_thread_free(target);
    gate_destroy(&g);
}

typedef struct self_ctx {
    crew_thread *self;
    int rc_forever, rc_zero, rc_timed;
    double elapsed;
} self_ctx;

static int join_self(void *arg) {
    self_ctx *c = arg;
    c->self = crew_thread_current();
    double t0 = crew_now();
    c->rc_zero = crew_thread_join(c->self, 0, NULL);
    c->rc_timed = crew_thread_join(c->self, 5.0, NULL);
    /* Without the check this would hang; ask only once the others refused. */
    c->rc_forever = c->rc_timed == CREW_EDEADLK ? crew_thread_join(c->self, CREW_FOREVER, NULL)
                                                : c->rc_timed;
    c->elapsed = crew_now() - t0;
    return 3;
}

static void test_join_self_deadlock(void **state) {
    (void)state;
    self_ctx c = { 0 };
    crew_thread *t = NULL;
    assert_int_equal(crew_thread_start(&t, join_self, &c, NULL), 0);
    int result = 0;
    assert_int_equal(crew_thread_join(t, 60.0, &result), 0);
    assert_int_equal(result, 3);
    assert_ptr_equal(c.self, t);
    assert_int_equal(c.rc_zero, CREW_EDEADLK);
    assert_int_equal(c.rc_timed, CREW_EDEADLK);
    assert_int_equal(c.rc_forever, CREW_EDEADLK);
    assert_true(c.elapsed < 4.0); /* refused, not waited out */
    crew_thread_free(t);
}

static void test_is_alive(void **state) {
    (void)state;
    gate g;
    gate_init(&g, 0);
    crew_thread *t = NULL;
    assert_int_equal(crew_thread_start(&t, wait_gate, &g, NULL), 0);
    /* Alive from start, even before the body has run. */
    assert_true(crew_thread_is_alive(t));
    assert_true(TEST_WAIT_UNTIL(atomic_load(&g.started) == 1, PROMPT));
    assert_true(crew_thread_is_alive(t));
    assert_int_equal(crew_event_set(&g.go), 0);
    assert_true(TEST_WAIT_UNTIL(!crew_thread_is_alive(t), PROMPT));
    assert_int_equal(crew_thread_join(t, 0, NULL), 0);
    assert_false(crew_thread_is_alive(t));
    crew_thread_free(t);
    gate_destroy(&g);
    assert_false(crew_thread_is_alive(NULL));
}

static void test_null_args(void **state) {
    (void)state;
    crew_thread *t = (crew_thread *)(uintptr_t)0x1;
    assert_int_equal(crew_thread_start(NULL, return_arg, NULL, NULL), CREW_EINVAL);
    assert_int_equal(crew_thread_start(&t, NULL, NULL, NULL), CREW_EINVAL);
    assert_int_equal(crew_timer_start(NULL, 0.1, return_arg, NULL, NULL), CREW_EINVAL);
    assert_int_equal(crew_timer_start(&t, 0.1, NULL, NULL, NULL), CREW_EINVAL);
    assert_int_equal(crew_timer_start(&t, -1, return_arg, NULL, NULL), CREW_EINVAL);
    assert_int_equal(crew_timer_start(&t, NAN, return_arg, NULL, NULL), CREW_EINVAL);
    assert_int_equal(crew_thread_join(NULL, 0, NULL), CREW_EINVAL);
    assert_int_equal(crew_timer_cancel(NULL), CREW_EINVAL);
    assert_int_equal(crew_thread_current_name(NULL, 8), CREW_EINVAL);
    crew_thread_free(NULL);
    /* Nothing was started by the failed calls. */
    assert_int_equal(crew_thread_active_count(), 1);
}

/* ------------------------------------------------------------ names and ids */

typedef struct whoami {
    crew_thread *current;
    long id_seen;        /* crew_thread_current_id() inside */
    long id_of_handle;   /* crew_thread_id(crew_thread_current()) inside */
    long gettid;
    char name[CREW_THREAD_NAME_MAX + 8];
    int name_len;
    char os_name[32];
    int os_name_rc;
} whoami;

static int record_whoami(void *arg) {
    whoami *w = arg;
    w->current = crew_thread_current();
    w->id_seen = crew_thread_current_id();
    w->id_of_handle = w->current ? crew_thread_id(w->current) : -1;
    w->gettid = os_tid();
    w->name_len = crew_thread_current_name(w->name, sizeof w->name);
    w->os_name_rc = pthread_getname_np(pthread_self(), w->os_name, sizeof w->os_name);
    return 0;
}

static void run_whoami(whoami *w, const crew_thread_options *opts, crew_thread **out) {
    memset(w, 0, sizeof *w);
    assert_int_equal(crew_thread_start(out, record_whoami, w, opts), 0);
    assert_int_equal(crew_thread_join(*out, 60.0, NULL), 0);
}

/* "Thread-N" with N a decimal number; returns N or -1. */
static long default_name_number(const char *name) {
    if (strncmp(name, "Thread-", 7) != 0)
        return -1;
    const char *p = name + 7;
    if (*p < '0' || *p > '9')
        return -1;
    char *end;
    long n = strtol(p, &end, 10);
    return *end == '\0' ? n : -1;
}

static void test_default_names(void **state) {
    (void)state;
    whoami w1, w2;
    crew_thread *t1, *t2;
    run_whoami(&w1, NULL, &t1);
    run_whoami(&w2, &(crew_thread_options){ .stack_size = 0 }, &t2);
    long n1 = default_name_number(crew_thread_name(t1));
    long n2 = default_name_number(crew_thread_name(t2));
    if (n1 < 0 || n2 < 0)
        fail_msg("names \"%s\", \"%s\" are not Thread-N", crew_thread_name(t1),
                 crew_thread_name(t2));
    assert_true(n2 > n1);
    /* The thread sees its own name. */
    assert_string_equal(w1.name, crew_thread_name(t1));
    assert_int_equal(w1.name_len, (int)strlen(crew_thread_name(t1)));
    assert_string_equal(w2.name, crew_thread_name(t2));
    crew_thread_free(t1);
    crew_thread_free(t2);
}

static void test_custom_name(void **state) {
    (void)state;
    char name[] = "worker-alpha";
    whoami w;
    crew_thread *t;
    run_whoami(&w, &(crew_thread_options){ .name = name }, &t);
    /* The name was copied. */
    name[0] = 'X';
    assert_string_equal(crew_thread_name(t), "worker-alpha");
    assert_string_equal(w.name, "worker-alpha");
    assert_int_equal(w.name_len, 12);
    assert_int_equal(w.os_name_rc, 0);
    assert_string_equal(w.os_name, "worker-alpha");
    crew_thread_free(t);
}

static void test_long_name(void **state) {
    (void)state;
    char name[200];
    for (size_t i = 0; i < sizeof name - 1; i++)
        name[i] = (char)('a' + i % 26);
    name[sizeof name - 1] = '\0';
    whoami w;
    crew_thread *t;
    run_whoami(&w, &(crew_thread_options){ .name = name }, &t);
    /* Kept up to CREW_THREAD_NAME_MAX - 1 bytes. */
    assert_int_equal(strlen(crew_thread_name(t)), CREW_THREAD_NAME_MAX - 1);
    assert_int_equal(strncmp(crew_thread_name(t), name, CREW_THREAD_NAME_MAX - 1), 0);
    assert_string_equal(w.name, crew_thread_name(t));
    /* The OS name is the first 15 bytes. */
    assert_int_equal(w.os_name_rc, 0);
    assert_int_equal(strlen(w.os_name), 15);
    assert_int_equal(strncmp(w.os_name, name, 15), 0);
    crew_thread_free(t);
}

static void test_current_in_main(void **state) {
    (void)state;
    assert_null(crew_thread_current());
    assert_int_equal(crew_thread_current_id(), (long)getpid());
    char buf[32];
    assert_int_equal(crew_thread_current_name(buf, sizeof buf), 10);
    assert_string_equal(buf, "MainThread");
    /* Truncated as snprintf does, returning the full length. */
    memset(buf, 'z', sizeof buf);
    assert_int_equal(crew_thread_current_name(buf, 5), 10);
    assert_string_equal(buf, "Main");
    assert_int_equal(buf[5], 'z');
    assert_int_equal(crew_thread_current_name(NULL, 0), 10);
    assert_int_equal(crew_thread_current_name(buf, 0), 10);
    assert_int_equal(buf[0], 'M'); /* size 0 writes nothing */
}

static void test_current_in_thread(void **state) {
    (void)state;
    whoami w;
    crew_thread *t;
    run_whoami(&w, &(crew_thread_options){ .name = "ident" }, &t);
    assert_ptr_equal(w.current, t);
    assert_true(w.id_seen > 0);
    assert_int_equal(w.id_seen, w.gettid);
    assert_int_equal(w.id_of_handle, w.id_seen);
    assert_int_not_equal(w.id_seen, (long)getpid());
    assert_string_equal(w.name, "ident");
    crew_thread_free(t);
}

/* A thread crew did not start: no handle, its OS name. */
static void *raw_thread(void *arg) {
    whoami *w = arg;
    pthread_setname_np(pthread_self(), "rawthr");
    w->current = crew_thread_current();
    w->id_seen = crew_thread_current_id();
    w->gettid = os_tid();
    w->name_len = crew_thread_current_name(w->name, sizeof w->name);
    return NULL;
}

static void test_current_in_foreign_thread(void **state) {
    (void)state;
    whoami w;
    memset(&w, 0, sizeof w);
    w.current = (crew_thread *)(uintptr_t)0x1;
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, raw_thread, &w), 0);
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_null(w.current);
    assert_int_equal(w.id_seen, w.gettid);
    assert_string_equal(w.name, "rawthr");
    assert_int_equal(w.name_len, 6);
}

/* ------------------------------------------------- active_count, enumerate */

static void test_active_count_and_enumerate(void **state) {
    (void)state;
    enum { N = 3 };
    assert_int_equal(crew_thread_active_count(), 1);
    gate g;
    gate_init(&g, 0);
    crew_thread *ts[N];
    const char *names[N] = { "enum-0", "enum-1", "enum-2" };
    for (int i = 0; i < N; i++) {
        crew_thread_options o = { .name = names[i], .daemon = (i == 2) };
        assert_int_equal(crew_thread_start(&ts[i], wait_gate, &g, &o), 0);
    }
    assert_true(TEST_WAIT_UNTIL(atomic_load(&g.started) == N, PROMPT));
    assert_int_equal(crew_thread_active_count(), N + 1);

    crew_thread_info info[8];
    memset(info, 0, sizeof info);
    assert_int_equal(crew_thread_enumerate(info, 8), N + 1);
    assert_true(info[0].main);
    assert_string_equal(info[0].name, "MainThread");
    assert_int_equal(info[0].id, (long)getpid());
    assert_false(info[0].daemon);
    int seen[N] = { 0 };
    for (int k = 1; k <= N; k++) {
        assert_false(info[k].main);
        int found = -1;
        for (int i = 0; i < N; i++)
            if (strcmp(info[k].name, names[i]) == 0)
                found = i;
        if (found < 0)
            fail_msg("enumerate listed unexpected thread \"%s\"", info[k].name);
        seen[found]++;
        assert_int_equal(info[k].id, crew_thread_id(ts[found]));
        assert_true(info[k].id > 0);
        assert_int_equal(info[k].daemon, found == 2);
    }
    for (int i = 0; i < N; i++)
        assert_int_equal(seen[i], 1);

    /* A smaller cap: the full count, and nothing written past the cap. */
    crew_thread_info small[4];
    memset(small, 0x5a, sizeof small);
    assert_int_equal(crew_thread_enumerate(small, 2), N + 1);
    assert_true(small[0].main);
    assert_string_equal(small[0].name, "MainThread");
    assert_false(small[1].main);
    assert_int_equal(strncmp(small[1].name, "enum-", 5), 0);
    const unsigned char *raw = (const unsigned char *)&small[2];
    for (size_t b = 0; b < 2 * sizeof small[0]; b++)
        assert_int_equal(raw[b], 0x5a);
    assert_int_equal(crew_thread_enumerate(small, 0), N + 1);

    assert_int_equal(crew_event_set(&g.go), 0);
    for (int i = 0; i < N; i++) {
        assert_int_equal(crew_thread_join(ts[i], 60.0, NULL), 0);
        crew_thread_free(ts[i]);
    }
    /* Joined threads have returned, so they are no longer counted. */
    assert_int_equal(crew_thread_active_count(), 1);
    assert_int_equal(crew_thread_enumerate(info, 8), 1);
    assert_true(info[0].main);
    gate_destroy(&g);
}

/* ------------------------------------------------------ stack size, daemon */

#define BIG_STACK ((size_t)32 << 20)
#define BIG_LOCAL ((size_t)24 << 20) /* more than the usual 8 MiB default */

static int use_big_stack(void *arg) {
    size_t *stack_seen = arg;
    pthread_attr_t attr;
    if (pthread_getattr_np(pthread_self(), &attr) == 0) {
        pthread_attr_getstacksize(&attr, stack_seen);
        pthread_attr_destroy(&attr);
    }
    volatile char big[BIG_LOCAL];
    for (size_t i = 0; i < BIG_LOCAL; i += 4096)
        big[i] = (char)i;
    big[BIG_LOCAL - 1] = 1;
    long sum = 0;
    for (size_t i = 0; i < BIG_LOCAL; i += 4096)
        sum += big[i];
    return (int)(sum & 0xff) + big[BIG_LOCAL - 1];
}

static void test_stack_size(void **state) {
    (void)state;
    size_t seen = 0;
    crew_thread *t = NULL;
    assert_int_equal(crew_thread_start(&t, use_big_stack, &seen,
                                       &(crew_thread_options){ .stack_size = BIG_STACK }),
                     0);
    int result = -1;
    assert_int_equal(crew_thread_join(t, 60.0, &result), 0);
    assert_true(result >= 1);
    assert_true(seen >= BIG_STACK);
    crew_thread_free(t);

    /* A modest stack is fine. */
    assert_int_equal(crew_thread_start(&t, return_arg, (void *)(intptr_t)8,
                                       &(crew_thread_options){ .stack_size = 256 * 1024 }),
                     0);
    assert_int_equal(crew_thread_join(t, 60.0, &result), 0);
    assert_int_equal(result, 8);
    crew_thread_free(t);

    /* More than the system can give: refused as CREW_EAGAIN (or ENOMEM),
     * nothing started, nothing leaked. */
    t = NULL;
    int rc = crew_thread_start(&t, return_arg, NULL,
                               &(crew_thread_options){ .stack_size = (size_t)1 << 50 });
    if (rc != CREW_EAGAIN && rc != CREW_ENOMEM)
        fail_msg("a 1 PiB stack gave %d (%s)", rc, crew_strerror(rc));
    assert_null(t);
    assert_int_equal(crew_thread_active_count(), 1);

    /* Below the minimum: refused, nothing started. */
    t = NULL;
    assert_int_equal(crew_thread_start(&t, return_arg, NULL,
                                       &(crew_thread_options){ .stack_size = 1 }),
                     CREW_EINVAL);
    assert_int_equal(crew_thread_active_count(), 1);
}

static void test_daemon_flag(void **state) {
    (void)state;
    crew_thread *a, *b;
    assert_int_equal(crew_thread_start(&a, return_arg, NULL, NULL), 0);
    assert_int_equal(crew_thread_start(&b, return_arg, NULL,
                                       &(crew_thread_options){ .daemon = true }),
                     0);
    assert_false(crew_thread_daemon(a));
    assert_true(crew_thread_daemon(b));
    assert_int_equal(crew_thread_join(a, 60.0, NULL), 0);
    assert_int_equal(crew_thread_join(b, 60.0, NULL), 0);
    assert_false(crew_thread_daemon(a));
    assert_true(crew_thread_daemon(b));
    crew_thread_free(a);
    crew_thread_free(b);
}

/* --------------------------------------------------- freeing a live thread */

/* Static: the thread outlives its handle and this test's stack frame. */
static crew_event free_go, free_done;
static atomic_int free_ran;

static int free_body(void *arg) {
    (void)arg;
    if (crew_event_wait(&free_go, 60.0) != 0)
        return 1;
    atomic_store(&free_ran, 1);
    crew_event_set(&free_done);
    return 0;
}

static void test_free_running_thread(void **state) {
    (void)state;
    assert_int_equal(crew_event_init(&free_go, 0), 0);
    assert_int_equal(crew_event_init(&free_done, 0), 0);
    atomic_store(&free_ran, 0);
    crew_thread *t = NULL;
    assert_int_equal(crew_thread_start(&t, free_body, NULL,
                                       &(crew_thread_options){ .name = "orphan" }),
                     0);
    assert_true(TEST_WAIT_UNTIL(crew_thread_active_count() == 2, PROMPT));
    crew_thread_free(t); /* never blocks; the thread goes on */
    assert_int_equal(crew_thread_active_count(), 2);
    crew_thread_info info[4];
    assert_int_equal(crew_thread_enumerate(info, 4), 2);
    assert_string_equal(info[1].name, "orphan");

    assert_int_equal(crew_event_set(&free_go), 0);
    assert_int_equal(crew_event_wait(&free_done, 60.0), 0);
    assert_int_equal(atomic_load(&free_ran), 1);
    /* It finishes and cleans up after itself. */
    assert_true(TEST_WAIT_UNTIL(crew_thread_active_count() == 1, PROMPT));
    assert_int_equal(crew_event_destroy(&free_go), 0);
    assert_int_equal(crew_event_destroy(&free_done), 0);
}

/* A thread that finished before its handle is freed. */
static void test_free_finished_unjoined(void **state) {
    (void)state;
    crew_thread *t = NULL;
    assert_int_equal(crew_thread_start(&t, return_arg, NULL, NULL), 0);
    assert_true(TEST_WAIT_UNTIL(!crew_thread_is_alive(t), PROMPT));
    crew_thread_free(t);
    assert_true(TEST_WAIT_UNTIL(crew_thread_active_count() == 1, PROMPT));
}

/* ------------------------------------------------------------------ timers */

typedef struct timer_ctx {
    _Atomic double fired_at;
    atomic_int runs;
    crew_event release;  /* a timer body that blocks until released */
    bool block;
} timer_ctx;

static int timer_body(void *arg) {
    timer_ctx *c = arg;
    atomic_store(&c->fired_at, test_now());
    atomic_fetch_add(&c->runs, 1);
    if (c->block && crew_event_wait(&c->release, 60.0) != 0)
        return -1;
    return 77;
}

static void timer_ctx_init(timer_ctx *c, bool block) {
    atomic_init(&c->fired_at, 0.0);
    atomic_init(&c->runs, 0);
    c->block = block;
    assert_int_equal(crew_event_init(&c->release, 0), 0);
}

static void test_timer_fires_after_delay(void **state) {
    (void)state;
    timer_ctx c;
    timer_ctx_init(&c, false);
    crew_thread *t = NULL;
    double t0 = test_now();
    assert_int_equal(crew_timer_start(&t, 0.1, timer_body, &c, NULL), 0);
    assert_true(crew_thread_is_alive(t));
    int result = 0;
    assert_int_equal(crew_thread_join(t, 60.0, &result), 0);
    assert_int_equal(result, 77);
    assert_int_equal(atomic_load(&c.runs), 1);
    double delay = atomic_load(&c.fired_at) - t0;
    assert_true(delay >= 0.1 - 1e-6);
    assert_true(delay < PROMPT);
    /* Already ran: too late to cancel. */
    assert_int_equal(crew_timer_cancel(t), CREW_EBUSY);
    crew_thread_free(t);
    assert_int_equal(crew_event_destroy(&c.release), 0);
}

static void test_timer_zero_delay(void **state) {
    (void)state;
    timer_ctx c;
    timer_ctx_init(&c, false);
    crew_thread *t = NULL;
    assert_int_equal(crew_timer_start(&t, 0, timer_body, &c,
                                       &(crew_thread_options){ .name = "tick" }),
                     0);
    assert_string_equal(crew_thread_name(t), "tick");
    int result = 0;
    assert_int_equal(crew_thread_join(t, 60.0, &result), 0);
    assert_int_equal(result, 77);
    assert_int_equal(atomic_load(&c.runs), 1);
    crew_thread_free(t);
    assert_int_equal(crew_event_destroy(&c.release), 0);
}

static void test_timer_cancel_before_fire(void **state) {
    (void)state;
    const double delays[] = { 30.0, CREW_FOREVER };
    for (size_t i = 0; i < 2; i++) {
        timer_ctx c;
        timer_ctx_init(&c, false);
        crew_thread *t = NULL;
        assert_int_equal(crew_timer_start(&t, delays[i], timer_body, &c, NULL), 0);
        assert_true(crew_thread_is_alive(t));
        assert_int_equal(crew_timer_cancel(t), 0);
        /* The cancelled timer's thread ends promptly, not at its delay. */
        double t0 = test_now();
        int result = 0;
        assert_int_equal(crew_thread_join(t, 20.0, &result), 0);
        assert_true(test_now() - t0 < PROMPT);
        assert_int_equal(result, CREW_ECANCELED);
        assert_int_equal(atomic_load(&c.runs), 0);
        assert_false(crew_thread_is_alive(t));
        crew_thread_free(t);
        assert_int_equal(crew_event_destroy(&c.release), 0);
    }
}

static void test_timer_cancel_while_running(void **state) {
    (void)state;
    timer_ctx c;
    timer_ctx_init(&c, true);
    crew_thread *t = NULL;
    assert_int_equal(crew_timer_start(&t, 0, timer_body, &c, NULL), 0);
    assert_true(TEST_WAIT_UNTIL(atomic_load(&c.runs) == 1, PROMPT));
    assert_int_equal(crew_timer_cancel(t), CREW_EBUSY);
    assert_int_equal(crew_event_set(&c.release), 0);
    int result = 0;
    assert_int_equal(crew_thread_join(t, 60.0, &result), 0);
    assert_int_equal(result, 77);
    assert_int_equal(crew_timer_cancel(t), CREW_EBUSY);
    crew_thread_free(t);
    assert_int_equal(crew_event_destroy(&c.release), 0);
}

static void test_timer_cancel_not_a_timer(void **state) {
    (void)state;
    gate g;
    gate_init(&g, 0);
    crew_thread *t = NULL;
    assert_int_equal(crew_thread_start(&t, wait_gate, &g, NULL), 0);
    assert_int_equal(crew_timer_cancel(t), CREW_EINVAL);
    assert_true(crew_thread_is_alive(t)); /* left alone */
    assert_int_equal(crew_event_set(&g.go), 0);
    assert_int_equal(crew_thread_join(t, 60.0, NULL), 0);
    assert_int_equal(crew_timer_cancel(t), CREW_EINVAL);
    crew_thread_free(t);
    gate_destroy(&g);
}

/* A timer freed before it fires still fires (it is a running thread). */
static crew_event timer_free_done;

static int timer_free_body(void *arg) {
    (void)arg;
    crew_event_set(&timer_free_done);
    return 0;
}

static void test_timer_free_before_fire(void **state) {
    (void)state;
    assert_int_equal(crew_event_init(&timer_free_done, 0), 0);
    crew_thread *t = NULL;
    assert_int_equal(crew_timer_start(&t, 0.05, timer_free_body, NULL, NULL), 0);
    crew_thread_free(t);
    assert_int_equal(crew_event_wait(&timer_free_done, 60.0), 0);
    assert_true(TEST_WAIT_UNTIL(crew_thread_active_count() == 1, PROMPT));
    assert_int_equal(crew_event_destroy(&timer_free_done), 0);
}

/* --------------------------------------------------------- churn and races */

static void test_many_threads(void **state) {
    (void)state;
    enum { N = 64 };
    gate g;
    gate_init(&g, 0);
    crew_thread *ts[N];
    for (int i = 0; i < N; i++)
        assert_int_equal(crew_thread_start(&ts[i], wait_gate, &g, NULL), 0);
    assert_true(TEST_WAIT_UNTIL(atomic_load(&g.started) == N, PROMPT));
    assert_int_equal(crew_thread_active_count(), N + 1);
    long ids[N];
    for (int i = 0; i < N; i++) {
        ids[i] = crew_thread_id(ts[i]);
        assert_true(ids[i] > 0);
        for (int j = 0; j < i; j++)
            assert_int_not_equal(ids[i], ids[j]);
    }
    assert_int_equal(crew_event_set(&g.go), 0);
    /* Half joined, half freed unjoined: both paths release everything. */
    for (int i = 0; i < N; i++) {
        if (i % 2 == 0)
            assert_int_equal(crew_thread_join(ts[i], 60.0, NULL), 0);
        crew_thread_free(ts[i]);
    }
    assert_true(TEST_WAIT_UNTIL(crew_thread_active_count() == 1, PROMPT));
    gate_destroy(&g);
}

static void test_start_free_churn(void **state) {
    (void)state;
    long rounds = test_scaled(200);
    for (long i = 0; i < rounds; i++) {
        crew_thread *t = NULL;
        assert_int_equal(crew_thread_start(&t, return_arg, (void *)(intptr_t)i, NULL), 0);
        if (i % 3 == 0) {
            int result = -1;
            assert_int_equal(crew_thread_join(t, 60.0, &result), 0);
            assert_int_equal(result, (int)i);
        }
        crew_thread_free(t); /* for the rest: free while it may still run */
    }
    assert_true(TEST_WAIT_UNTIL(crew_thread_active_count() == 1, PROMPT));
}

/* Cancel racing the timer firing: either it was cancelled (fn never runs,
 * result CREW_ECANCELED) or it fired (cancel says CREW_EBUSY, fn ran once). */
static void test_timer_cancel_race(void **state) {
    (void)state;
    long rounds = test_scaled(200);
    int cancelled = 0, fired = 0;
    for (long i = 0; i < rounds; i++) {
        timer_ctx c;
        timer_ctx_init(&c, false);
        crew_thread *t = NULL;
        assert_int_equal(crew_timer_start(&t, (i % 4) * 1e-4, timer_body, &c, NULL), 0);
        int rc = crew_timer_cancel(t);
        int result = 0;
        assert_int_equal(crew_thread_join(t, 60.0, &result), 0);
        if (rc == 0) {
            assert_int_equal(result, CREW_ECANCELED);
            assert_int_equal(atomic_load(&c.runs), 0);
            cancelled++;
        } else {
            assert_int_equal(rc, CREW_EBUSY);
            assert_int_equal(result, 77);
            assert_int_equal(atomic_load(&c.runs), 1);
            fired++;
        }
        crew_thread_free(t);
        assert_int_equal(crew_event_destroy(&c.release), 0);
    }
    assert_int_equal(cancelled + fired, rounds);
}

/* -------------------------------------------------------------------- fork */

/* Wait for a child with a deadline; kill it if it overstays. Returns the
 * status, or -1 if it had to be killed. */
static int wait_child(pid_t pid, double seconds) {
    int status = 0;
    double deadline = test_now() + seconds;
    for (;;) {
        pid_t got = waitpid(pid, &status, WNOHANG);
        if (got == pid)
            return status;
        if (got < 0)
            return -2;
        if (test_now() > deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            return -1;
        }
        struct timespec ts = { 0, 2 * 1000 * 1000 };
        nanosleep(&ts, NULL);
    }
}

static void assert_child_ok(int status) {
    if (status < 0)
        fail_msg("child hung (killed after its deadline)");
    if (!WIFEXITED(status))
        fail_msg("child died by signal %d", WIFSIGNALED(status) ? WTERMSIG(status) : -1);
    if (WEXITSTATUS(status) != 0)
        fail_msg("child check %d failed", WEXITSTATUS(status));
}

/* The child of a process with a crew thread blocked in an event: that
 * thread does not exist there, its handle says so. */
static void test_fork_with_live_thread(void **state) {
    (void)state;
    /* Runs under TSan too: its child starts no thread. */
    gate g;
    gate_init(&g, 0);
    crew_thread *t = NULL;
    assert_int_equal(crew_thread_start(&t, wait_gate, &g, NULL), 0);
    assert_true(TEST_WAIT_UNTIL(atomic_load(&g.started) == 1, PROMPT));

    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (crew_thread_is_alive(t))
            _exit(1);
        double t0 = crew_now();
        if (crew_thread_join(t, CREW_FOREVER, NULL) != 0)
            _exit(2);
        if (crew_now() - t0 > 5.0)
            _exit(3);
        if (crew_thread_join(t, 0, NULL) != 0)
            _exit(4);
        if (crew_thread_active_count() != 1)
            _exit(5);
        crew_thread_info info[4];
        if (crew_thread_enumerate(info, 4) != 1 || !info[0].main)
            _exit(6);
        if (crew_thread_current_id() != (long)getpid())
            _exit(7);
        if (info[0].id != (long)getpid())
            _exit(8);
        char buf[32];
        if (crew_thread_current_name(buf, sizeof buf) != 10 || strcmp(buf, "MainThread") != 0)
            _exit(9);
        _exit(0);
    }
    int status = wait_child(pid, 30.0);
    /* Still alive here in the parent. */
    assert_true(crew_thread_is_alive(t));
    assert_int_equal(crew_event_set(&g.go), 0);
    assert_int_equal(crew_thread_join(t, 60.0, NULL), 0);
    crew_thread_free(t);
    gate_destroy(&g);
    assert_child_ok(status);
}

/* A child forked from a crew thread: its only thread has the child's id, and
 * it can start and join threads of its own. */
static atomic_int fork_from_thread_status;

static int fork_in_thread(void *arg) {
    (void)arg;
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        if (crew_thread_current_id() != (long)getpid())
            _exit(1);
        if (crew_thread_active_count() != 1)
            _exit(2);
        crew_thread *t = NULL;
        if (crew_thread_start(&t, return_arg, (void *)(intptr_t)11, NULL) != 0)
            _exit(3);
        int r = 0;
        if (crew_thread_join(t, 30.0, &r) != 0 || r != 11)
            _exit(4);
        crew_thread_free(t);
        _exit(0);
    }
    atomic_store(&fork_from_thread_status, wait_child(pid, 30.0));
    return 0;
}

static void test_fork_from_crew_thread(void **state) {
    (void)state;
#ifdef TEST_TSAN
    skip(); /* TSan kills a child of a threaded process that starts threads */
#endif
    crew_thread *t = NULL;
    assert_int_equal(crew_thread_start(&t, fork_in_thread, NULL, NULL), 0);
    int result = -5;
    assert_int_equal(crew_thread_join(t, 60.0, &result), 0);
    assert_int_equal(result, 0);
    crew_thread_free(t);
    assert_child_ok(atomic_load(&fork_from_thread_status));
}

/* Exit joins non-daemon threads, not daemon ones. A MAP_SHARED page carries
 * what the child's threads did back to the parent. */
typedef struct exit_page {
    atomic_int marker;
    atomic_int daemon_started;
} exit_page;

static exit_page *page;
static crew_event never;               /* in the child: set by nobody */
static crew_thread *exit_child_thread; /* kept reachable for the leak check */

static int late_marker(void *arg) {
    (void)arg;
    crew_sleep(0.1); /* exit() is already running by now */
    atomic_store(&page->marker, 1);
    return 0;
}

static int daemon_blocked(void *arg) {
    (void)arg;
    atomic_store(&page->daemon_started, 1);
    crew_event_wait(&never, CREW_FOREVER);
    return 0;
}

enum exit_mode { KEEP_HANDLE, FREE_HANDLE, DAEMON_ONLY, DAEMON_AND_WORKER, EXIT_IN_THREAD };

/* exit() called by a crew thread: it waits for the other non-daemon threads
 * (not for itself, not for the main thread). */
static int call_exit(void *arg) {
    (void)arg;
    exit(0);
}

static void run_exit_child(enum exit_mode mode) {
    if (crew_event_init(&never, 0) != 0)
        _exit(20);
    if (mode == DAEMON_ONLY || mode == DAEMON_AND_WORKER) {
        crew_thread *d = NULL;
        if (crew_thread_start(&d, daemon_blocked, NULL,
                              &(crew_thread_options){ .daemon = true }) != 0)
            _exit(21);
        while (!atomic_load(&page->daemon_started))
            sched_yield();
        crew_thread_free(d);
    }
    if (mode != DAEMON_ONLY) {
        if (crew_thread_start(&exit_child_thread, late_marker, NULL, NULL) != 0)
            _exit(22);
        if (mode != KEEP_HANDLE)
            crew_thread_free(exit_child_thread);
    }
    if (mode == EXIT_IN_THREAD) {
        crew_thread *x = NULL;
        if (crew_thread_start(&x, call_exit, NULL, NULL) != 0)
            _exit(23);
        crew_event_wait(&never, CREW_FOREVER); /* main blocks; exit happens */
        _exit(24);
    }
    exit(0); /* as main returning does */
}

static void check_exit_mode(enum exit_mode mode) {
    wait_single_threaded();
    page = mmap(NULL, sizeof *page, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    assert_true(page != MAP_FAILED);
    atomic_init(&page->marker, 0);
    atomic_init(&page->daemon_started, 0);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        run_exit_child(mode);
    int status = wait_child(pid, 30.0);
    int marker = atomic_load(&page->marker);
    int daemon_started = atomic_load(&page->daemon_started);
    assert_int_equal(munmap(page, sizeof *page), 0);
    page = NULL;
    assert_child_ok(status);
    if (mode == DAEMON_ONLY) {
        assert_int_equal(daemon_started, 1);
        assert_int_equal(marker, 0);
    } else {
        /* exit() waited for the non-daemon thread to finish. */
        assert_int_equal(marker, 1);
        if (mode == DAEMON_AND_WORKER)
            assert_int_equal(daemon_started, 1);
    }
}

static void test_exit_joins_non_daemon(void **state) {
    (void)state;
    check_exit_mode(KEEP_HANDLE);
}

static void test_exit_joins_freed_non_daemon(void **state) {
    (void)state;
    check_exit_mode(FREE_HANDLE);
}

static void test_exit_skips_daemon(void **state) {
    (void)state;
    check_exit_mode(DAEMON_ONLY);
}

static void test_exit_daemon_and_worker(void **state) {
    (void)state;
    check_exit_mode(DAEMON_AND_WORKER);
}

static void test_exit_from_crew_thread(void **state) {
    (void)state;
    check_exit_mode(EXIT_IN_THREAD);
}

/* In a child whose parent had a non-daemon thread running at fork, exit()
 * does not wait for that thread (it does not exist there). Under ASan the
 * child's leak check says "Running thread N was not suspended": LSan still
 * lists the parent's thread. It is a notice, not a failure. */
static void test_exit_in_child_ignores_parent_threads(void **state) {
    (void)state;
    gate g;
    gate_init(&g, 0);
    crew_thread *t = NULL;
    assert_int_equal(crew_thread_start(&t, wait_gate, &g, NULL), 0);
    assert_true(TEST_WAIT_UNTIL(atomic_load(&g.started) == 1, PROMPT));
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        exit(0);
    int status = wait_child(pid, 30.0);
    assert_int_equal(crew_event_set(&g.go), 0);
    assert_int_equal(crew_thread_join(t, 60.0, NULL), 0);
    crew_thread_free(t);
    gate_destroy(&g);
    assert_child_ok(status);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, check_only_main, check_only_main)

static void *noop_thread(void *arg) {
    return arg;
}

int main(void) {
    pthread_t th;
    if (pthread_create(&th, NULL, noop_thread, NULL) != 0 || pthread_join(th, NULL) != 0)
        return 1;
    const struct CMUnitTest tests[] = {
        T(test_start_join_result),
        T(test_join_timeout),
        T(test_join_zero_after_finish),
        T(test_many_joiners),
        T(test_join_self_deadlock),
        T(test_is_alive),
        T(test_null_args),
        T(test_default_names),
        T(test_custom_name),
        T(test_long_name),
        T(test_current_in_main),
        T(test_current_in_thread),
        T(test_current_in_foreign_thread),
        T(test_active_count_and_enumerate),
        T(test_stack_size),
        T(test_daemon_flag),
        T(test_free_running_thread),
        T(test_free_finished_unjoined),
        T(test_timer_fires_after_delay),
        T(test_timer_zero_delay),
        T(test_timer_cancel_before_fire),
        T(test_timer_cancel_while_running),
        T(test_timer_cancel_not_a_timer),
        T(test_timer_free_before_fire),
        T(test_many_threads),
        T(test_start_free_churn),
        T(test_timer_cancel_race),
        T(test_fork_with_live_thread),
        T(test_fork_from_crew_thread),
        T(test_exit_joins_non_daemon),
        T(test_exit_joins_freed_non_daemon),
        T(test_exit_skips_daemon),
        T(test_exit_daemon_and_worker),
        T(test_exit_from_crew_thread),
        T(test_exit_in_child_ignores_parent_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
