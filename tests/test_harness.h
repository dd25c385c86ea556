/* The harness shared by the cmocka test programs that use helper threads and
 * forked processes (test_sync, test_queue, test_shm): return-code assertions
 * that print codes by name, the same checks for forked children (which
 * report through their exit status), helper threads joined with a deadline,
 * a look at a thread's kernel state in /proc, shared mappings, forking and
 * reaping children, and the fork-per-test runner that main() calls.
 *
 * Everything is a macro or a static inline function, so a program that uses
 * only some of it still builds warning-free. Include it after defining
 * _GNU_SOURCE (pthread_timedjoin_np, pipe2) and, where a program's tests
 * need longer or shorter than the default, TEST_PROCESS_LIMIT. */
#ifndef CREW_TEST_HARNESS_H
#define CREW_TEST_HARNESS_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "crew/error.h"
#include "test_util.h"

/* A wait that should succeed gets this long before it counts as a hang. */
#define LONG_WAIT 30.0
/* How long the main thread polls for helpers to reach a state. */
#define SETTLE 20.0
/* A timed-out call may return this much before its timeout (clock reads) and
 * this much after it (a loaded 2-core machine, sanitizers). */
#define TIME_EPS 0.002
#define TIME_SLACK 2.0
/* The timeout used where a call is expected to time out. */
#define SHORT 0.1

/* ------------------------------------------------------------ assertions */

/* Compare a return code, printing both codes by name on failure. */
#define ASSERT_RC(expr, want)                                                   \
    do {                                                                        \
        int rc_ = (expr);                                                       \
        int want_ = (want);                                                     \
        if (rc_ != want_) {                                                     \
            print_error("%s returned %d (%s), expected %d (%s)\n", #expr, rc_,  \
                        crew_err_name(rc_), want_, crew_err_name(want_));       \
            fail();                                                             \
        }                                                                       \
    } while (0)

static inline void check_elapsed(double elapsed, double timeout, const char *file, int line) {
    if (elapsed < timeout - TIME_EPS || elapsed > timeout + TIME_SLACK) {
        print_error("waited %.6f s for a %.3f s timeout\n", elapsed, timeout);
        _fail(file, line);
    }
}
#define ASSERT_ELAPSED(elapsed, timeout) check_elapsed((elapsed), (timeout), __FILE__, __LINE__)

/* The same in a forked child, which reports through its exit status. */
#define CHILD_CHECK(cond)                                                       \
    do {                                                                        \
        if (!(cond)) {                                                          \
            fprintf(stderr, "child %d, %s:%d: check failed: %s\n", (int)getpid(), \
                    __FILE__, __LINE__, #cond);                                 \
            return 1;                                                           \
        }                                                                       \
    } while (0)

#define CHILD_RC(expr, want)                                                    \
    do {                                                                        \
        int rc_ = (expr);                                                       \
        int want_ = (want);                                                     \
        if (rc_ != want_) {                                                     \
            fprintf(stderr, "child %d, %s:%d: %s returned %d (%s), expected %d (%s)\n", \
                    (int)getpid(), __FILE__, __LINE__, #expr, rc_,              \
                    crew_err_name(rc_), want_, crew_err_name(want_));           \
            return 1;                                                           \
        }                                                                       \
    } while (0)

/* ------------------------------------------------------- threads, /proc */

static inline int my_tid(void) { return (int)syscall(SYS_gettid); }

static inline void th_start(pthread_t *t, void *(*fn)(void *), void *arg) {
    int rc = pthread_create(t, NULL, fn, arg);
    if (rc != 0) {
        print_error("pthread_create: %s\n", strerror(rc));
        fail();
    }
}

/* Join with a deadline: a helper stuck in a call is a hang, and its stack
 * frame may still be in use, so stop the program rather than go on. */
static inline void th_join(pthread_t t) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 90;
    int rc = pthread_timedjoin_np(t, NULL, &ts);
    if (rc != 0) {
        print_error("a helper thread did not finish within 90 s (%s): a call hangs\n",
                    strerror(rc));
        abort();
    }
}

static inline bool read_small(const char *path, char *buf, size_t size) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    ssize_t n = read(fd, buf, size - 1);
    close(fd);
    if (n <= 0) return false;
    buf[n] = '\0';
    return true;
}

/* Whether thread `tid` of process `pid` is asleep in futex(). Where /proc
 * does not show the system call, being asleep has to do. */
static inline bool task_in_futex_once(int pid, int tid) {
    char path[96], buf[512];
    snprintf(path, sizeof path, "/proc/%d/task/%d/stat", pid, tid);
    if (!read_small(path, buf, sizeof buf)) return false;
    const char *p = strrchr(buf, ')');
    if (p == NULL || p[1] != ' ' || p[2] != 'S') return false;
    snprintf(path, sizeof path, "/proc/%d/task/%d/syscall", pid, tid);
    if (!read_small(path, buf, sizeof buf)) return true;
    if (buf[0] < '0' || buf[0] > '9') return false;
    long nr = strtol(buf, NULL, 10);
#ifdef SYS_futex_waitv
    if (nr == SYS_futex_waitv) return true;
#endif
    return nr == SYS_futex;
}

/* Seen in futex() twice, 2 ms apart, so a passing internal lock (the
 * sanitizer runtime's, say) is not taken for the call under test. */
static inline bool task_in_futex(int pid, int tid) {
    if (!task_in_futex_once(pid, tid)) return false;
    struct timespec ts = {0, 2000000};
    nanosleep(&ts, NULL);
    return task_in_futex_once(pid, tid);
}

/* Wait until a helper thread that publishes its `tid` before a call and sets
 * `done` after it sleeps inside that call; false if it returned, or never
 * slept within `seconds`. */
static inline bool thread_blocked(_Atomic int *tid, _Atomic bool *done, double seconds) {
    bool ok = TEST_WAIT_UNTIL(atomic_load(done) ||
                                  (atomic_load(tid) != 0 && task_in_futex(getpid(), atomic_load(tid))),
                              seconds);
    return ok && !atomic_load(done);
}

/* ------------------------------------------------------ forked children */

static inline void *shm_map(size_t size) {
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        print_error("mmap: %s\n", strerror(errno));
        fail();
    }
    return p;
}

static inline void shm_unmap(void *p, size_t size) { assert_int_equal(munmap(p, size), 0); }

typedef int (*child_fn)(void *arg);

/* Fork a child that runs fn(arg) and _exits with its result. */
static inline pid_t fork_child(child_fn fn, void *arg) {
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        print_error("fork: %s\n", strerror(errno));
        fail();
    }
    if (pid == 0) _exit(fn(arg));
    return pid;
}

/* Reap `pid` (killing it if it hangs) and return its wait status. */
static inline int reap(pid_t pid) {
    int status = 0;
    pid_t r = 0;
    bool ok = TEST_WAIT_UNTIL((r = waitpid(pid, &status, WNOHANG)) != 0, 90.0);
    if (!ok) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        print_error("child %d did not finish within 90 s\n", (int)pid);
        fail();
    }
    if (r != pid) {
        print_error("waitpid(%d): %s\n", (int)pid, strerror(errno));
        fail();
    }
    return status;
}

/* Reap `pid`; it must have exited with status `want`. */
static inline void reap_status(pid_t pid, int want) {
    int st = reap(pid);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != want) {
        if (WIFEXITED(st))
            print_error("child %d exited with status %d, expected %d\n", (int)pid, WEXITSTATUS(st),
                        want);
        else
            print_error("child %d was killed by signal %d\n", (int)pid,
                        WIFSIGNALED(st) ? WTERMSIG(st) : -1);
        fail();
    }
}

static inline void reap_ok(pid_t pid) { reap_status(pid, 0); }

/* ---------------------------------------------------------------- runner */

/* Run each test in a child process of its own (as libuv's runner does), so a
 * test that fails while helpers still use its objects, or leaves a robust
 * mutex held on its stack, cannot take the following tests down with it,
 * each test starts from a fresh process (no arena, no tracker), and a hang
 * is killed and reported. The runner itself starts no thread, so every fork
 * is from a single-threaded process. A program may define its own limit
 * before including this header. */
#ifndef TEST_PROCESS_LIMIT
#define TEST_PROCESS_LIMIT 120.0
#endif

/* A test that takes longer than this is listed as SLOW. */
#define TEST_SLOW_AFTER 5.0

static inline bool test_run_in_child(const struct CMUnitTest *t) {
    double t0 = test_now();
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "fork: %s\n", strerror(errno));
        return false;
    }
    if (pid == 0) exit(_cmocka_run_group_tests(t->name, t, 1, NULL, NULL) == 0 ? 0 : 1);
    int status = 0;
    pid_t r = 0;
    bool ok = false;
    if (!TEST_WAIT_UNTIL((r = waitpid(pid, &status, WNOHANG)) != 0, TEST_PROCESS_LIMIT)) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        fprintf(stderr, "[  FAILED  ] %s: still running after %.0f s, killed\n", t->name,
                TEST_PROCESS_LIMIT);
    } else if (r != pid) {
        fprintf(stderr, "[  FAILED  ] %s: waitpid: %s\n", t->name, strerror(errno));
    } else if (WIFSIGNALED(status)) {
        fprintf(stderr, "[  FAILED  ] %s: killed by signal %d\n", t->name, WTERMSIG(status));
    } else {
        ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    }
    double elapsed = test_now() - t0;
    if (elapsed > TEST_SLOW_AFTER) printf("[   SLOW   ] %s took %.1f s\n", t->name, elapsed);
    return ok;
}

/* Run `tests` (n of them) of the program `group`, each in a process of its
 * own, print a summary and return main's exit status: 0 when at least one
 * test ran and none failed. CREW_TEST_FORK=0 runs the tests in this process
 * instead (for a debugger); CREW_TEST_FILTER=pattern runs only the tests
 * whose name matches (fnmatch wildcards). `final_check`, when not NULL, runs
 * after the forked tests and counts as a failure named `final_name` when it
 * returns false. */
static inline int test_run_forked_check(const char *group, const struct CMUnitTest *tests,
                                        size_t n, const char *final_name,
                                        bool (*final_check)(void)) {
    const char *filter = getenv("CREW_TEST_FILTER");
    if (filter != NULL && *filter == '\0') filter = NULL;
    const char *fork_env = getenv("CREW_TEST_FORK");
    if (fork_env != NULL && strcmp(fork_env, "0") == 0) {
        if (filter != NULL) cmocka_set_test_filter(filter);
        return _cmocka_run_group_tests("tests", tests, n, NULL, NULL);
    }
    const char **failures = calloc(n + 1, sizeof *failures);
    if (failures == NULL) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    size_t ran = 0, failed = 0;
    for (size_t i = 0; i < n; i++) {
        if (filter != NULL && fnmatch(filter, tests[i].name, 0) != 0) continue;
        ran++;
        if (!test_run_in_child(&tests[i])) failures[failed++] = tests[i].name;
    }
    if (final_check != NULL && !final_check()) failures[failed++] = final_name;
    printf("[==========] %s: %zu test(s) run, %zu failed.\n", group, ran, failed);
    for (size_t i = 0; i < failed; i++) printf("[  FAILED  ] %s\n", failures[i]);
    free(failures);
    return failed == 0 && ran > 0 ? 0 : 1;
}

static inline int test_run_forked(const char *group, const struct CMUnitTest *tests, size_t n) {
    return test_run_forked_check(group, tests, n, NULL, NULL);
}

#endif
