/* Tests for clock.h: crew_now is the monotonic clock, crew_sleep sleeps at
 * least as long as asked (signals do not cut it short) and rejects negative
 * and NaN durations. */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <string.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "crew/clock.h"
#include "crew/error.h"
#include "test_util.h"

/* Slack for double rounding when comparing two readings of the same clock. */
#define CLOCK_EPS 1e-6

static void test_now_monotonic(void **state) {
    (void)state;
    double prev = crew_now();
    for (int i = 0; i < 200000; i++) {
        double t = crew_now();
        assert_true(t >= prev);
        prev = t;
    }
}

static void test_now_tracks_monotonic_clock(void **state) {
    (void)state;
    /* Sandwich each crew_now reading between two CLOCK_MONOTONIC readings:
     * the interval crew_now measures must lie within the outer and inner
     * intervals, whatever preemption happens between reads. */
    double m0a = test_now(), c0 = crew_now(), m0b = test_now();
    struct timespec ts = { 0, 50 * 1000 * 1000 };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
    double m1a = test_now(), c1 = crew_now(), m1b = test_now();
    double dc = c1 - c0;
    assert_true(dc >= 0.05 - 1e-3);
    assert_true(dc >= (m1a - m0b) - CLOCK_EPS);
    assert_true(dc <= (m1b - m0a) + CLOCK_EPS);
}

static void test_sleep_duration(void **state) {
    (void)state;
    double t0 = test_now();
    assert_int_equal(crew_sleep(0.05), 0);
    double dt = test_now() - t0;
    assert_true(dt >= 0.05 - CLOCK_EPS);
    assert_true(dt < 2.0);

    t0 = crew_now();
    assert_int_equal(crew_sleep(0.001), 0);
    dt = crew_now() - t0;
    assert_true(dt >= 0.001 - CLOCK_EPS);
    assert_true(dt < 2.0);
}

static void test_sleep_zero(void **state) {
    (void)state;
    double t0 = test_now();
    assert_int_equal(crew_sleep(0), 0);
    assert_int_equal(crew_sleep(1e-9), 0);
    assert_true(test_now() - t0 < 1.0);
}

static void test_sleep_invalid(void **state) {
    (void)state;
    double t0 = test_now();
    assert_int_equal(crew_sleep(-1), CREW_EINVAL);
    assert_int_equal(crew_sleep(-1e-9), CREW_EINVAL);
    assert_int_equal(crew_sleep(-HUGE_VAL), CREW_EINVAL);
    assert_int_equal(crew_sleep(NAN), CREW_EINVAL);
    assert_int_equal(crew_sleep(-NAN), CREW_EINVAL);
    /* An invalid value returns at once rather than sleeping. */
    assert_true(test_now() - t0 < 1.0);
}

static volatile sig_atomic_t alarms;

static void on_alarm(int sig) {
    (void)sig;
    alarms++;
}

static void test_sleep_resumes_after_signal(void **state) {
    (void)state;
    struct sigaction sa, old;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0; /* no SA_RESTART: the sleep sees EINTR */
    assert_int_equal(sigaction(SIGALRM, &sa, &old), 0);
    alarms = 0;

    /* Fire at 20 ms, then every 30 ms: several interruptions. */
    struct itimerval it = { .it_interval = { 0, 30000 }, .it_value = { 0, 20000 } };
    assert_int_equal(setitimer(ITIMER_REAL, &it, NULL), 0);
    double t0 = test_now();
    int rc = crew_sleep(0.2);
    double dt = test_now() - t0;
    struct itimerval off = { { 0, 0 }, { 0, 0 } };
    assert_int_equal(setitimer(ITIMER_REAL, &off, NULL), 0);
    assert_int_equal(sigaction(SIGALRM, &old, NULL), 0);

    assert_int_equal(rc, 0);
    assert_true(alarms >= 1);
    assert_true(dt >= 0.2 - CLOCK_EPS);
    assert_true(dt < 3.0);
}

/* CREW_FOREVER (and anything past 2^62 ns) sleeps until killed. Checked in a
 * child, which the parent kills after seeing it still asleep. */
static void check_sleeps_forever(double seconds) {
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int rc = crew_sleep(seconds);
        _exit(rc == 0 ? 10 : 11); /* returning at all is the failure */
    }
    int status = 0;
    /* Not waiting for another thread to act: checking that nothing happens
     * for a while. A broken sleep returns at once. */
    double deadline = test_now() + 0.3;
    pid_t got = 0;
    while (test_now() < deadline) {
        got = waitpid(pid, &status, WNOHANG);
        if (got != 0)
            break;
        struct timespec ts = { 0, 5 * 1000 * 1000 };
        nanosleep(&ts, NULL);
    }
    if (got == 0) {
        kill(pid, SIGKILL);
        got = waitpid(pid, &status, 0);
    }
    assert_int_equal(got, pid);
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGKILL);
}

static void test_sleep_forever(void **state) {
    (void)state;
    check_sleeps_forever(CREW_FOREVER);
    check_sleeps_forever(1e300);
    check_sleeps_forever(4.7e9); /* > 2^62 ns */
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_now_monotonic),
        cmocka_unit_test(test_now_tracks_monotonic_clock),
        cmocka_unit_test(test_sleep_duration),
        cmocka_unit_test(test_sleep_zero),
        cmocka_unit_test(test_sleep_invalid),
        cmocka_unit_test(test_sleep_resumes_after_signal),
        cmocka_unit_test(test_sleep_forever),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
