/* Tests for process.h: exit codes and signals, join with timeouts and many
 * joiners, is_alive, terminate/kill after the child ended (pid reuse), the
 * children list, names, the at-exit rule for daemon and non-daemon
 * children, PR_SET_PDEATHSIG, stdio flushing, signal masks, handles in a
 * forked child, and the pid-based fallback.
 *
 * Children report through their exit status and pipes. Nothing sleeps to
 * wait for a child: children block on pipe reads (a "gate") until the test
 * writes to it, and the test waits on conditions with generous deadlines.
 * Every test runs in a process of its own (test_harness.h), and its teardown
 * checks that no child is left over: crew lists none and waitpid finds none.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <math.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/resource.h>

/* A hang is a failure well before CTest's limit for the whole program. */
#define TEST_PROCESS_LIMIT 60.0
#include "test_harness.h"

#if defined(__SANITIZE_ADDRESS__)
#define TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TEST_ASAN 1
#endif
#endif
#ifdef TEST_ASAN
#include <sanitizer/lsan_interface.h>
#endif

#include "crew/clock.h"
#include "crew/process.h"
#include "pidfd.h" /* crew__pidfd_disabled */

/* ------------------------------------------------------------ helpers */

/* A pipe a child blocks on until the test writes a byte per child to let go. */
typedef struct gate {
    int rd, wr;
} gate;

static void gate_open(gate *g) {
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    g->rd = fds[0];
    g->wr = fds[1];
}

static void gate_let(gate *g, int n) {
    for (int i = 0; i < n; i++) assert_int_equal(write(g->wr, "x", 1), 1);
}

static void gate_close(gate *g) {
    close(g->rd);
    close(g->wr);
}

/* Child bodies. */
static int ret_arg(void *arg) { return (int)(intptr_t)arg; }

/* Wait at the gate, then exit 5 (2 if the pipe failed). */
static int wait_gate(void *arg) {
    gate *g = arg;
    char c;
    ssize_t n;
    while ((n = read(g->rd, &c, 1)) < 0 && errno == EINTR) {}
    return n == 1 ? 5 : 2;
}

static int sleep_forever(void *arg) {
    (void)arg;
    for (;;) pause();
    return 0; /* not reached */
}

static int raise_segv(void *arg) {
    (void)arg;
    struct rlimit none = {0, 0};
    setrlimit(RLIMIT_CORE, &none);
    signal(SIGSEGV, SIG_DFL); /* a sanitizer's handler would exit instead */
    raise(SIGSEGV);
    return 99;
}

static int start_ok(crew_process **p, crew_process_fn fn, void *arg, const crew_process_options *o) {
    *p = NULL;
    int rc = crew_process_start(p, fn, arg, o);
    if (rc == 0) assert_non_null(*p);
    return rc;
}

static void join_code(crew_process *p, int want) {
    ASSERT_RC(crew_process_join(p, LONG_WAIT), 0);
    int code = 12345;
    ASSERT_RC(crew_process_exitcode(p, &code), 0);
    assert_int_equal(code, want);
    assert_false(crew_process_is_alive(p));
}

/* Whether the child `pid` has ended (zombie or gone), without reaping it. */
static bool child_ended(pid_t pid) {
    siginfo_t info;
    memset(&info, 0, sizeof info);
    return waitid(P_PID, (id_t)pid, &info, WEXITED | WNOHANG | WNOWAIT) == 0 && info.si_pid == pid;
}

/* Whether pid was reaped already (waitpid finds no such child). */
static bool reaped(pid_t pid) {
    int st;
    return waitpid(pid, &st, WNOHANG) < 0 && errno == ECHILD;
}

/* Whether thread `tid` of this process sleeps in system call `nr`. */
static bool task_in_syscall(int tid, long nr) {
    char path[96], buf[512];
    snprintf(path, sizeof path, "/proc/self/task/%d/stat", tid);
    if (!read_small(path, buf, sizeof buf)) return false;
    const char *p = strrchr(buf, ')');
    if (p == NULL || p[1] != ' ' || p[2] != 'S') return false;
    snprintf(path, sizeof path, "/proc/self/task/%d/syscall", tid);
    if (!read_small(path, buf, sizeof buf)) return true;
    return strtol(buf, NULL, 10) == nr;
}

static bool task_exists(int tid) {
    char path[64];
    snprintf(path, sizeof path, "/proc/self/task/%d", tid);
    return access(path, F_OK) == 0;
}

static int thread_count(void) {
    char buf[4096];
    if (!read_small("/proc/self/status", buf, sizeof buf)) return -1;
    const char *p = strstr(buf, "Threads:");
    return p ? atoi(p + 8) : -1;
}

/* Read one byte from fd within `seconds`: the byte, -1 at end of file, -2 on
 * timeout. */
static int read_byte(int fd, double seconds) {
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    int rc;
    while ((rc = poll(&pfd, 1, (int)(seconds * 1000))) < 0 && errno == EINTR) {}
    if (rc == 0) return -2;
    unsigned char c;
    ssize_t n;
    while ((n = read(fd, &c, 1)) < 0 && errno == EINTR) {}
    return n == 1 ? c : -1;
}

/* Fork a plain helper process that dies with the test (so a failing test
 * leaves no orphan behind). */
static pid_t fork_helper(void) {
    pid_t parent = getpid();
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) _exit(99);
    }
    return pid;
}

/* Every test starts and ends without children. */
static int no_children(void **state) {
    (void)state;
    crew__pidfd_disabled = false;
    if (crew_process_children(NULL, 0) != 0) {
        print_error("crew still lists %zu children\n", crew_process_children(NULL, 0));
        return -1;
    }
    int st;
    pid_t z = waitpid(-1, &st, WNOHANG);
    if (z != -1 || errno != ECHILD) {
        print_error("waitpid(-1) found child %d left over\n", (int)z);
        return -1;
    }
    return 0;
}

/* -------------------------------------------------- exit codes, signals */

static void test_exit_codes(void **state) {
    (void)state;
    static const int cases[][2] = {{0, 0}, {3, 3}, {255, 255}, {CREW_EINVAL, 1}, {-1, 1}, {256, 1}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        crew_process *p;
        ASSERT_RC(start_ok(&p, ret_arg, (void *)(intptr_t)cases[i][0], NULL), 0);
        assert_true(crew_process_pid(p) > 0);
        join_code(p, cases[i][1]);
        /* Joining again, and with a 0 timeout, is fine. */
        ASSERT_RC(crew_process_join(p, 0), 0);
        ASSERT_RC(crew_process_join(p, CREW_FOREVER), 0);
        crew_process_free(p);
    }
}

static void check_stop(int (*stop)(crew_process *), int want) {
    gate g;
    gate_open(&g);
    crew_process *p;
    ASSERT_RC(start_ok(&p, wait_gate, &g, NULL), 0);
    int code = 12345;
    ASSERT_RC(crew_process_exitcode(p, &code), CREW_EBUSY);
    assert_int_equal(code, 12345);
    assert_true(crew_process_is_alive(p));
    ASSERT_RC(stop(p), 0);
    join_code(p, want);
    ASSERT_RC(stop(p), 0); /* ended: nothing to do */
    crew_process_free(p);
    gate_close(&g);
}

static void test_terminate(void **state) {
    (void)state;
    check_stop(crew_process_terminate, -SIGTERM);
}

static void test_kill(void **state) {
    (void)state;
    check_stop(crew_process_kill, -SIGKILL);
}

static void test_segfault(void **state) {
    (void)state;
    crew_process *p;
    ASSERT_RC(start_ok(&p, raise_segv, NULL, NULL), 0);
    join_code(p, -SIGSEGV);
    crew_process_free(p);
}

/* ------------------------------------------------------------- join */

static void test_join_timeout(void **state) {
    (void)state;
    gate g;
    gate_open(&g);
    crew_process *p;
    ASSERT_RC(start_ok(&p, wait_gate, &g, NULL), 0);
    double t0 = test_now();
    ASSERT_RC(crew_process_join(p, SHORT), CREW_ETIMEDOUT);
    ASSERT_ELAPSED(test_now() - t0, SHORT);
    t0 = test_now();
    ASSERT_RC(crew_process_join(p, 0), CREW_ETIMEDOUT);
    assert_true(test_now() - t0 < TIME_SLACK);
    ASSERT_RC(crew_process_join(p, -1.0), CREW_EINVAL);
    ASSERT_RC(crew_process_join(p, NAN), CREW_EINVAL);
    assert_true(crew_process_is_alive(p));
    gate_let(&g, 1);
    join_code(p, 5);
    crew_process_free(p);
    gate_close(&g);
}

enum { JOINERS = 8 };

typedef struct joiner {
    crew_process *p;
    _Atomic int tid;
    int rc, code, code_rc;
} joiner;

static void *join_thread(void *arg) {
    joiner *j = arg;
    atomic_store(&j->tid, my_tid());
    j->rc = crew_process_join(j->p, LONG_WAIT);
    j->code_rc = crew_process_exitcode(j->p, &j->code);
    return NULL;
}

static void check_many_joiners(bool pidfd) {
    gate g;
    gate_open(&g);
    crew_process *p;
    ASSERT_RC(start_ok(&p, wait_gate, &g, NULL), 0);
    pid_t pid = crew_process_pid(p);
    joiner js[JOINERS];
    pthread_t th[JOINERS];
    for (int i = 0; i < JOINERS; i++) {
        js[i] = (joiner){.p = p, .rc = 1, .code = 1, .code_rc = 1};
        th_start(&th[i], join_thread, &js[i]);
    }
    if (pidfd) {
        /* Every joiner sleeps in ppoll on the pidfd before the child ends. */
        for (int i = 0; i < JOINERS; i++)
            assert_true(TEST_WAIT_UNTIL(atomic_load(&js[i].tid) != 0 &&
                                            task_in_syscall(atomic_load(&js[i].tid), SYS_ppoll),
                                        SETTLE));
    } else {
        for (int i = 0; i < JOINERS; i++) assert_true(TEST_WAIT_UNTIL(atomic_load(&js[i].tid) != 0, SETTLE));
    }
    assert_true(crew_process_is_alive(p));
    gate_let(&g, 1);
    for (int i = 0; i < JOINERS; i++) {
        th_join(th[i]);
        ASSERT_RC(js[i].rc, 0);
        ASSERT_RC(js[i].code_rc, 0);
        assert_int_equal(js[i].code, 5);
    }
    assert_true(reaped(pid));
    crew_process_free(p);
    gate_close(&g);
}

static void test_many_joiners(void **state) {
    (void)state;
    check_many_joiners(true);
}

static void test_is_alive(void **state) {
    (void)state;
    gate g;
    gate_open(&g);
    crew_process *p;
    ASSERT_RC(start_ok(&p, wait_gate, &g, NULL), 0);
    pid_t pid = crew_process_pid(p);
    assert_true(crew_process_is_alive(p));
    assert_false(reaped(pid));
    gate_let(&g, 1);
    /* is_alive turns false by itself, reaping the child as it does. */
    assert_true(TEST_WAIT_UNTIL(!crew_process_is_alive(p), LONG_WAIT));
    assert_true(reaped(pid));
    int code = 0;
    ASSERT_RC(crew_process_exitcode(p, &code), 0);
    assert_int_equal(code, 5);
    crew_process_free(p);
    gate_close(&g);
}

static void test_sentinel(void **state) {
    (void)state;
    gate g;
    gate_open(&g);
    crew_process *p;
    ASSERT_RC(start_ok(&p, wait_gate, &g, NULL), 0);
    int fd = crew_process_sentinel(p);
    assert_true(fd >= 0);
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    assert_int_equal(poll(&pfd, 1, 0), 0);
    gate_let(&g, 1);
    assert_int_equal(poll(&pfd, 1, (int)(LONG_WAIT * 1000)), 1);
    assert_true(pfd.revents & POLLIN);
    join_code(p, 5);
    crew_process_free(p);
    gate_close(&g);
}

/* --------------------------------------------- ended children, pid reuse */

/* A child that exited but was not reaped yet: terminate and kill reap it
 * instead of signalling, and its code is its own. */
static void test_stop_after_exit(void **state) {
    (void)state;
    crew_process *p;
    ASSERT_RC(start_ok(&p, ret_arg, (void *)3, NULL), 0);
    pid_t pid = crew_process_pid(p);
    assert_true(TEST_WAIT_UNTIL(child_ended(pid), LONG_WAIT));
    ASSERT_RC(crew_process_terminate(p), 0);
    assert_true(reaped(pid));
    ASSERT_RC(crew_process_kill(p), 0);
    int code = 0;
    ASSERT_RC(crew_process_exitcode(p, &code), 0);
    assert_int_equal(code, 3);
    assert_false(crew_process_is_alive(p));
    crew_process_free(p);
}

/* Fork a plain child that gets pid `want` (through ns_last_pid) and exits 0
 * once let through `g`. Returns its pid, or -1 where pids cannot be chosen
 * (no CAP_SYS_ADMIN) or another process kept taking it. */
static pid_t fork_with_pid(pid_t want, gate *g) {
    for (int i = 0; i < 500; i++) {
        int fd = open("/proc/sys/kernel/ns_last_pid", O_WRONLY | O_CLOEXEC);
        if (fd < 0) return -1;
        char buf[32];
        int len = snprintf(buf, sizeof buf, "%d", (int)want - 1);
        ssize_t w = write(fd, buf, (size_t)len);
        close(fd);
        if (w != len) return -1;
        fflush(NULL);
        pid_t pid = fork();
        if (pid == 0) {
            char c;
            _exit(read(g->rd, &c, 1) == 1 ? 0 : 3);
        }
        assert_true(pid > 0);
        if (pid == want) return pid;
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
    }
    return -1;
}

/* The child ended and was reaped by crew; an unrelated process now has its
 * pid. terminate and kill return 0 and must not touch that process. */
static void check_pid_reuse(bool behind_back) {
    crew_process *p;
    ASSERT_RC(start_ok(&p, ret_arg, (void *)0, NULL), 0);
    pid_t old = crew_process_pid(p);
    if (behind_back) {
        /* Reaped behind crew's back: crew finds that out through the pidfd. */
        siginfo_t info;
        assert_int_equal(waitid(P_PID, (id_t)old, &info, WEXITED), 0);
    } else {
        join_code(p, 0);
    }
    gate g;
    gate_open(&g);
    pid_t other = fork_with_pid(old, &g);
    if (other < 0) {
        crew_process_join(p, LONG_WAIT);
        crew_process_free(p);
        gate_close(&g);
        skip();
    }
    ASSERT_RC(crew_process_terminate(p), 0);
    ASSERT_RC(crew_process_kill(p), 0);
    assert_false(crew_process_is_alive(p));
    ASSERT_RC(crew_process_join(p, 0), 0);
    int code = 77;
    ASSERT_RC(crew_process_exitcode(p, &code), behind_back ? CREW_ECHILD : 0);
    assert_int_equal(code, behind_back ? 77 : 0);
    /* The other process was not signalled: it exits 0 once let go. */
    assert_false(child_ended(other));
    gate_let(&g, 1);
    reap_ok(other);
    crew_process_free(p);
    gate_close(&g);
}

static void test_pid_reuse(void **state) {
    (void)state;
    check_pid_reuse(false);
}

static void test_pid_reuse_reaped_elsewhere(void **state) {
    (void)state;
    check_pid_reuse(true);
}

static void test_pid_reuse_fallback(void **state) {
    (void)state;
    crew__pidfd_disabled = true;
    check_pid_reuse(false);
}

/* ------------------------------------------------------ children list */

static void test_children(void **state) {
    (void)state;
    gate g;
    gate_open(&g);
    crew_process *a, *b, *c;
    ASSERT_RC(start_ok(&a, wait_gate, &g, NULL), 0);
    ASSERT_RC(start_ok(&b, wait_gate, &g, &(crew_process_options){.daemon = true}), 0);
    ASSERT_RC(start_ok(&c, ret_arg, (void *)4, NULL), 0);
    assert_true(TEST_WAIT_UNTIL(child_ended(crew_process_pid(c)), LONG_WAIT));

    crew_process *out[8] = {0};
    assert_int_equal(crew_process_children(out, 8), 2); /* reaps c */
    assert_ptr_equal(out[0], a);
    assert_ptr_equal(out[1], b);
    assert_null(out[2]);
    assert_true(reaped(crew_process_pid(c)));
    int code = 0;
    ASSERT_RC(crew_process_exitcode(c, &code), 0);
    assert_int_equal(code, 4);
    crew_process_free(out[0]);
    crew_process_free(out[1]);

    assert_int_equal(crew_process_children(NULL, 0), 2);
    assert_int_equal(crew_process_children(NULL, 5), 2);
    out[0] = out[1] = NULL;
    assert_int_equal(crew_process_children(out, 1), 2);
    assert_ptr_equal(out[0], a);
    assert_null(out[1]);
    crew_process_free(out[0]);

    gate_let(&g, 2);
    join_code(a, 5);
    join_code(b, 5);
    assert_int_equal(crew_process_children(out, 8), 0);
    crew_process_free(a);
    crew_process_free(b);
    crew_process_free(c);
    gate_close(&g);
}

/* The handle of a running child is freed: the child runs on, is listed, and
 * a handle from the list can still end it. */
static void test_free_running(void **state) {
    (void)state;
    gate g;
    gate_open(&g);
    crew_process *p;
    ASSERT_RC(start_ok(&p, wait_gate, &g, &(crew_process_options){.name = "freed"}), 0);
    pid_t pid = crew_process_pid(p);
    crew_process_free(p);
    assert_false(child_ended(pid));
    crew_process *out[2] = {0};
    assert_int_equal(crew_process_children(out, 2), 1);
    assert_int_equal(crew_process_pid(out[0]), pid);
    assert_string_equal(crew_process_name(out[0]), "freed");
    assert_true(crew_process_is_alive(out[0]));
    gate_let(&g, 1);
    join_code(out[0], 5);
    crew_process_free(out[0]);
    assert_int_equal(crew_process_children(NULL, 0), 0);
    gate_close(&g);
}

/* --------------------------------------------------------------- names */

static int check_name(void *arg) {
    CHILD_CHECK(strcmp(crew_process_current_name(), (const char *)arg) == 0);
    CHILD_CHECK(crew_process_children(NULL, 0) == 0);
    return 0;
}

static void test_names(void **state) {
    (void)state;
    assert_string_equal(crew_process_current_name(), "MainProcess");
    crew_process *p1, *p2, *p3, *p4;
    ASSERT_RC(start_ok(&p1, ret_arg, NULL, NULL), 0);
    ASSERT_RC(start_ok(&p2, ret_arg, NULL, &(crew_process_options){.name = "alpha"}), 0);
    ASSERT_RC(start_ok(&p3, ret_arg, NULL, &(crew_process_options){.daemon = true}), 0);
    char longname[100];
    memset(longname, 'n', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    ASSERT_RC(start_ok(&p4, ret_arg, NULL, &(crew_process_options){.name = longname}), 0);

    /* Default names count every process started, as Python's do. */
    int n = 0;
    assert_int_equal(sscanf(crew_process_name(p1), "Process-%d", &n), 1);
    char want[32];
    snprintf(want, sizeof want, "Process-%d", n + 2);
    assert_string_equal(crew_process_name(p3), want);
    assert_string_equal(crew_process_name(p2), "alpha");
    assert_int_equal(strlen(crew_process_name(p4)), CREW_PROCESS_NAME_MAX - 1);
    assert_memory_equal(crew_process_name(p4), longname, CREW_PROCESS_NAME_MAX - 1);
    assert_false(crew_process_daemon(p1));
    assert_true(crew_process_daemon(p3));
    crew_process *all[] = {p1, p2, p3, p4};
    for (int i = 0; i < 4; i++) {
        join_code(all[i], 0);
        crew_process_free(all[i]);
    }
}

static void test_current_name(void **state) {
    (void)state;
    crew_process *p;
    ASSERT_RC(start_ok(&p, check_name, "worker-7", &(crew_process_options){.name = "worker-7"}), 0);
    join_code(p, 0);
    crew_process_free(p);
    /* The default name: the child knows it by the same name. */
    static char expect[CREW_PROCESS_NAME_MAX];
    ASSERT_RC(start_ok(&p, sleep_forever, NULL, NULL), 0);
    snprintf(expect, sizeof expect, "%s", crew_process_name(p));
    ASSERT_RC(crew_process_kill(p), 0);
    join_code(p, -SIGKILL);
    crew_process_free(p);
    int n = 0;
    assert_int_equal(sscanf(expect, "Process-%d", &n), 1);
    snprintf(expect, sizeof expect, "Process-%d", n + 1);
    ASSERT_RC(start_ok(&p, check_name, expect, NULL), 0);
    join_code(p, 0);
    crew_process_free(p);
    assert_string_equal(crew_process_current_name(), "MainProcess");
}

/* A child starts children of its own: their default names extend its id,
 * as Python's "Process-1:1" do, and it joins them. */
static int start_grandchildren(void *arg) {
    (void)arg;
    char want[CREW_PROCESS_NAME_MAX + 8];
    for (int i = 1; i <= 2; i++) {
        snprintf(want, sizeof want, "%s:%d", crew_process_current_name(), i);
        crew_process *g = NULL;
        CHILD_RC(crew_process_start(&g, check_name, want, NULL), 0);
        CHILD_CHECK(strcmp(crew_process_name(g), want) == 0);
        CHILD_RC(crew_process_join(g, LONG_WAIT), 0);
        int code = 1;
        CHILD_RC(crew_process_exitcode(g, &code), 0);
        CHILD_CHECK(code == 0);
        crew_process_free(g);
    }
    return 0;
}

static void test_nested_names(void **state) {
    (void)state;
#ifdef TEST_TSAN
    skip(); /* TSan kills a child of a threaded process that starts threads */
#endif
    crew_process *p;
    ASSERT_RC(start_ok(&p, start_grandchildren, NULL, NULL), 0);
    join_code(p, 0);
    crew_process_free(p);
}

/* ----------------------------------------------------- threads, signals */

/* A child outlives the thread that started it: PR_SET_PDEATHSIG fires when
 * the thread that forked a child exits, and crew forks from a thread that
 * stays. The starting thread waits until the child runs fn (so the death
 * signal is armed) before it exits. */
typedef struct starter {
    gate g;                       /* the child waits here */
    int ready[2];                 /* the child says it runs */
    crew_process *p;
    _Atomic int tid;
    int rc;
} starter;

static int ready_then_gate(void *arg) {
    starter *s = arg;
    if (write(s->ready[1], "r", 1) != 1) return 2;
    return wait_gate(&s->g);
}

static void *start_and_leave(void *arg) {
    starter *s = arg;
    atomic_store(&s->tid, my_tid());
    s->rc = crew_process_start(&s->p, ready_then_gate, s, NULL);
    if (s->rc == 0 && read_byte(s->ready[0], LONG_WAIT) != 'r') s->rc = -1;
    return NULL;
}

static void test_outlives_starting_thread(void **state) {
    (void)state;
    starter s = {.rc = 1};
    gate_open(&s.g);
    assert_int_equal(pipe(s.ready), 0);
    pthread_t t;
    th_start(&t, start_and_leave, &s);
    th_join(t);
    ASSERT_RC(s.rc, 0);
    /* The thread's task is gone: any death signal has been sent. */
    assert_true(TEST_WAIT_UNTIL(!task_exists(atomic_load(&s.tid)), LONG_WAIT));
    assert_true(crew_process_is_alive(s.p));
    gate_let(&s.g, 1);
    join_code(s.p, 5);
    crew_process_free(s.p);
    gate_close(&s.g);
    close(s.ready[0]);
    close(s.ready[1]);
}

static int check_mask(void *arg) {
    (void)arg;
    sigset_t cur;
    CHILD_CHECK(pthread_sigmask(SIG_BLOCK, NULL, &cur) == 0);
    CHILD_CHECK(sigismember(&cur, SIGUSR1) == 1);
    CHILD_CHECK(sigismember(&cur, SIGUSR2) == 0);
    CHILD_CHECK(sigismember(&cur, SIGTERM) == 0);
    CHILD_CHECK(sigismember(&cur, SIGINT) == 0);
    return 0;
}

/* The child has the signal mask of the thread that started it. */
static void test_signal_mask(void **state) {
    (void)state;
    sigset_t set, old;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    assert_int_equal(pthread_sigmask(SIG_BLOCK, &set, &old), 0);
    crew_process *p;
    int rc = start_ok(&p, check_mask, NULL, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    ASSERT_RC(rc, 0);
    join_code(p, 0);
    crew_process_free(p);
}

/* ---------------------------------------------------------------- stdio */

static FILE *out_file;

static int write_buffered(void *arg) {
    (void)arg;
    fputs("B", out_file); /* left in the buffer: the child's exit flushes it */
    return 0;
}

/* Output the parent buffered before start is written once (start flushes
 * before forking), and the child's buffered output is not lost. */
static void test_stdio_flush(void **state) {
    (void)state;
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    out_file = fdopen(fds[1], "w");
    assert_non_null(out_file);
    assert_int_equal(setvbuf(out_file, NULL, _IOFBF, 4096), 0);
    fputs("A", out_file);
    crew_process *p;
    ASSERT_RC(start_ok(&p, write_buffered, NULL, NULL), 0);
    join_code(p, 0);
    crew_process_free(p);
    assert_int_equal(fclose(out_file), 0);
    char buf[16] = {0};
    size_t len = 0;
    ssize_t n;
    while (len < sizeof buf - 1 && (n = read(fds[0], buf + len, sizeof buf - 1 - len)) > 0) len += (size_t)n;
    close(fds[0]);
    assert_string_equal(buf, "AB");
}

/* ------------------------------------------------------------- exit */

typedef struct exit_page {
    _Atomic int ready;
    _Atomic int ignoring; /* D2 ignores SIGTERM */
    _Atomic int n_pid, d_pid, d2_pid;
} exit_page;

static exit_page *xpage;
static int go_rd, done_wr;

static int nondaemon_work(void *arg) {
    (void)arg;
    char c;
    if (read(go_rd, &c, 1) != 1) return 2;
    return write(done_wr, "D", 1) == 1 ? 0 : 3;
}

static int daemon_stubborn(void *arg) {
    (void)arg;
    signal(SIGTERM, SIG_IGN);
    atomic_store(&xpage->ignoring, 1);
    for (;;) pause();
    return 0; /* not reached */
}

/* The helper process: start a non-daemon worker and two daemons, free the
 * handles, and return from "main". */
static int exit_helper(void) {
    crew_process *n, *d, *d2;
    if (crew_process_start(&n, nondaemon_work, NULL, NULL) != 0) return 10;
    if (crew_process_start(&d, sleep_forever, NULL, &(crew_process_options){.daemon = true}) != 0) return 11;
    if (crew_process_start(&d2, daemon_stubborn, NULL, &(crew_process_options){.daemon = true}) != 0) return 12;
    atomic_store(&xpage->n_pid, crew_process_pid(n));
    atomic_store(&xpage->d_pid, crew_process_pid(d));
    atomic_store(&xpage->d2_pid, crew_process_pid(d2));
    if (!TEST_WAIT_UNTIL(atomic_load(&xpage->ignoring), LONG_WAIT)) return 13;
    crew_process_free(n);
    crew_process_free(d);
    crew_process_free(d2);
    atomic_store(&xpage->ready, 1);
    return 0;
}

static bool gone(pid_t pid) { return kill(pid, 0) != 0 && errno == ESRCH; }

/* At exit, a process terminates its daemon children (SIGKILL for one that
 * ignores SIGTERM), waits for the non-daemon one to finish its work, and
 * leaves nothing behind. The test is a subreaper, so a child the helper
 * failed to reap would end up as its zombie. */
static void test_exit_rule(void **state) {
    (void)state;
    assert_int_equal(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
    xpage = shm_map(sizeof *xpage);
    int go[2], done[2];
    assert_int_equal(pipe(go), 0);
    assert_int_equal(pipe(done), 0);
    go_rd = go[0];
    done_wr = done[1];
    pid_t h = fork_helper();
    if (h == 0) {
        int rc = exit_helper();
        if (rc != 0) _exit(rc);
        exit(0); /* as main returning does */
    }
    close(done[1]);
    close(go[0]);
    assert_true(TEST_WAIT_UNTIL(atomic_load(&xpage->ready) || child_ended(h), LONG_WAIT));
    assert_int_equal(atomic_load(&xpage->ready), 1);
    pid_t d = atomic_load(&xpage->d_pid), d2 = atomic_load(&xpage->d2_pid);
    /* Both daemons are terminated and reaped (the stubborn one after the
     * grace period)... */
    assert_true(TEST_WAIT_UNTIL(gone(d) && gone(d2), LONG_WAIT));
    /* ...while the helper still waits for its non-daemon child. */
    assert_false(child_ended(h));
    assert_int_equal(read_byte(done[0], 0), -2);
    assert_int_equal(write(go[1], "g", 1), 1);
    assert_int_equal(read_byte(done[0], LONG_WAIT), 'D');
    reap_ok(h);
    assert_int_equal(read_byte(done[0], LONG_WAIT), -1); /* the worker is gone too */
    close(done[0]);
    close(go[1]);
    shm_unmap(xpage, sizeof *xpage);
}

/* The forker thread leaves once no child is left, so a program whose main
 * thread calls pthread_exit still ends: here after a child it never joins
 * has ended (the forker reaps it). */
static void test_main_pthread_exit(void **state) {
    (void)state;
#ifdef TEST_TSAN
    skip(); /* TSan's background thread keeps any such process alive */
#endif
    gate g;
    gate_open(&g);
    pid_t h = fork_helper();
    if (h == 0) {
        crew_process *p;
        if (crew_process_start(&p, ret_arg, (void *)0, NULL) != 0) _exit(10);
        if (crew_process_join(p, LONG_WAIT) != 0) _exit(11);
        crew_process_free(p);
        if (crew_process_start(&p, wait_gate, &g, NULL) != 0) _exit(12);
        crew_process_free(p);
#ifdef TEST_ASAN
        /* Now, while main's stack still counts as a root; the check at exit
         * would run without it. */
        __lsan_do_leak_check();
#endif
        pthread_exit(NULL);
    }
    /* The helper lives on while its child does... */
    assert_false(child_ended(h));
    /* ...and ends once the child has. */
    gate_let(&g, 1);
    reap_ok(h);
    gate_close(&g);
}

static void test_forker_leaves_when_idle(void **state) {
    (void)state;
#ifdef TEST_TSAN
    skip(); /* TSan starts threads of its own in a forked process */
#endif
    enum { baseline = 1 }; /* the test process's main thread */
    assert_true(TEST_WAIT_UNTIL(thread_count() == baseline, LONG_WAIT));
    crew_process *p;
    ASSERT_RC(start_ok(&p, ret_arg, (void *)0, NULL), 0);
    assert_int_equal(thread_count(), baseline + 1); /* the forker */
    join_code(p, 0);
    crew_process_free(p);
    assert_true(TEST_WAIT_UNTIL(thread_count() == baseline, LONG_WAIT));
}

/* --------------------------------------------------------- PDEATHSIG */

/* The helper starts a child that holds the write end of `obs` and says
 * ready through it; the helper is then killed. The child must die with it:
 * `obs` reaches end of file, and (the test being a subreaper) the child
 * comes back to the test killed by SIGKILL. */
static int obs_wr;

static int hold_obs(void *arg) {
    (void)arg;
    if (write(obs_wr, "r", 1) != 1) return 2;
    for (;;) pause();
    return 0; /* not reached */
}

static void test_pdeathsig(void **state) {
    (void)state;
    assert_int_equal(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
    exit_page *pg = shm_map(sizeof *pg);
    int obs[2];
    assert_int_equal(pipe(obs), 0);
    obs_wr = obs[1];
    pid_t h = fork_helper();
    if (h == 0) {
        close(obs[0]);
        crew_process *p;
        if (crew_process_start(&p, hold_obs, NULL, NULL) != 0) _exit(10);
        atomic_store(&pg->n_pid, crew_process_pid(p));
        close(obs[1]);
        for (;;) pause();
    }
    close(obs[1]);
    assert_int_equal(read_byte(obs[0], LONG_WAIT), 'r');
    assert_true(TEST_WAIT_UNTIL(atomic_load(&pg->n_pid) > 0, LONG_WAIT));
    pid_t g = atomic_load(&pg->n_pid);
    assert_int_equal(kill(h, SIGKILL), 0);
    int st = reap(h);
    assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    int b = read_byte(obs[0], LONG_WAIT);
    if (b != -1) kill(g, SIGKILL);
    assert_int_equal(b, -1);
    st = reap(g);
    assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    close(obs[0]);
    shm_unmap(pg, sizeof *pg);
}

/* --------------------------------------------------- fork, bad args */

/* In a plain fork()ed child, the parent's handles are not its children. */
static void test_handles_in_forked_child(void **state) {
    (void)state;
    gate g;
    gate_open(&g);
    crew_process *p;
    ASSERT_RC(start_ok(&p, wait_gate, &g, NULL), 0);
    pid_t c = fork_helper();
    if (c == 0) {
        int code = 0;
        if (crew_process_join(p, 0) != CREW_ECHILD) _exit(1);
        if (crew_process_is_alive(p)) _exit(2);
        if (crew_process_terminate(p) != CREW_ECHILD) _exit(3);
        if (crew_process_kill(p) != CREW_ECHILD) _exit(4);
        if (crew_process_exitcode(p, &code) != CREW_ECHILD) _exit(5);
        if (crew_process_children(NULL, 0) != 0) _exit(6);
        if (strcmp(crew_process_current_name(), "MainProcess") != 0) _exit(7);
        if (crew_process_pid(p) <= 0) _exit(8);
        crew_process_free(p);
        _exit(0);
    }
    reap_ok(c);
    assert_true(crew_process_is_alive(p));
    gate_let(&g, 1);
    join_code(p, 5);
    crew_process_free(p);
    gate_close(&g);
}

static void test_bad_args(void **state) {
    (void)state;
    crew_process *p = (crew_process *)&p;
    ASSERT_RC(crew_process_start(NULL, ret_arg, NULL, NULL), CREW_EINVAL);
    ASSERT_RC(crew_process_start(&p, NULL, NULL, NULL), CREW_EINVAL);
    assert_ptr_equal(p, (crew_process *)&p);
    ASSERT_RC(crew_process_join(NULL, 1.0), CREW_EINVAL);
    int code = 9;
    ASSERT_RC(crew_process_exitcode(NULL, &code), CREW_EINVAL);
    assert_int_equal(code, 9);
    ASSERT_RC(crew_process_terminate(NULL), CREW_EINVAL);
    ASSERT_RC(crew_process_kill(NULL), CREW_EINVAL);
    assert_false(crew_process_is_alive(NULL));
    assert_int_equal(crew_process_pid(NULL), 0);
    assert_null(crew_process_name(NULL));
    assert_false(crew_process_daemon(NULL));
    assert_int_equal(crew_process_sentinel(NULL), -1);
    crew_process_free(NULL);
    assert_int_equal(crew_process_children(NULL, 3), 0);

    ASSERT_RC(start_ok(&p, ret_arg, NULL, NULL), 0);
    ASSERT_RC(crew_process_exitcode(p, NULL), CREW_EINVAL);
    ASSERT_RC(crew_process_join(p, -0.5), CREW_EINVAL);
    join_code(p, 0);
    crew_process_free(p);
}

/* ------------------------------------------------ pid-based fallback */

static void test_fallback(void **state) {
    (void)state;
    crew__pidfd_disabled = true;
    crew_process *p;
    ASSERT_RC(start_ok(&p, ret_arg, (void *)3, NULL), 0);
    assert_int_equal(crew_process_sentinel(p), -1);
    join_code(p, 3);
    crew_process_free(p);

    gate g;
    gate_open(&g);
    ASSERT_RC(start_ok(&p, wait_gate, &g, NULL), 0);
    double t0 = test_now();
    ASSERT_RC(crew_process_join(p, SHORT), CREW_ETIMEDOUT);
    ASSERT_ELAPSED(test_now() - t0, SHORT);
    ASSERT_RC(crew_process_terminate(p), 0);
    join_code(p, -SIGTERM);
    crew_process_free(p);
    gate_close(&g);
    check_many_joiners(false);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, no_children, no_children)

int main(void) {
    const struct CMUnitTest tests[] = {
        T(test_exit_codes),
        T(test_terminate),
        T(test_kill),
        T(test_segfault),
        T(test_join_timeout),
        T(test_many_joiners),
        T(test_is_alive),
        T(test_sentinel),
        T(test_stop_after_exit),
        T(test_pid_reuse),
        T(test_pid_reuse_reaped_elsewhere),
        T(test_pid_reuse_fallback),
        T(test_children),
        T(test_free_running),
        T(test_names),
        T(test_current_name),
        T(test_nested_names),
        T(test_outlives_starting_thread),
        T(test_signal_mask),
        T(test_stdio_flush),
        T(test_exit_rule),
        T(test_main_pthread_exit),
        T(test_forker_leaves_when_idle),
        T(test_pdeathsig),
        T(test_handles_in_forked_child),
        T(test_bad_args),
        T(test_fallback),
    };
    return test_run_forked("test_process", tests, sizeof tests / sizeof tests[0]);
}
