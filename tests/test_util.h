/* Helpers shared by the test programs: scaling of stress work, and waiting
 * on a condition with a generous deadline instead of sleeping. */
#ifndef CREW_TEST_UTIL_H
#define CREW_TEST_UTIL_H

#include <stdbool.h>
#include <stdlib.h>
#include <time.h>

/* Which sanitizer, if any, the test is built with (gcc says it with
 * __SANITIZE_*__, clang with __has_feature): TEST_TSAN for ThreadSanitizer,
 * TEST_SANITIZED for it or AddressSanitizer. */
#if defined(__SANITIZE_THREAD__)
#define TEST_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define TEST_TSAN 1
#endif
#endif
#if defined(TEST_TSAN) || defined(__SANITIZE_ADDRESS__)
#define TEST_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TEST_SANITIZED 1
#endif
#endif

/* CREW_STRESS_SCALE (default 1): sanitizer runs set it lower. */
static inline double test_scale(void) {
    const char *s = getenv("CREW_STRESS_SCALE");
    double v = s ? atof(s) : 1.0;
    return v > 0 ? v : 1.0;
}

static inline long test_scaled(long n) {
    long v = (long)((double)n * test_scale());
    return v > 0 ? v : 1;
}

static inline double test_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Poll `cond` (an expression) until it holds or `seconds` pass; yields the
 * CPU between polls. Evaluates to whether it held. */
#define TEST_WAIT_UNTIL(cond, seconds)                                        \
    ({                                                                        \
        double test_deadline_ = test_now() + (seconds);                       \
        bool test_ok_ = false;                                                \
        for (;;) {                                                            \
            if (cond) { test_ok_ = true; break; }                             \
            if (test_now() > test_deadline_) break;                           \
            struct timespec test_ts_ = {0, 1000000};                          \
            nanosleep(&test_ts_, NULL);                                       \
        }                                                                     \
        test_ok_;                                                             \
    })

#endif
