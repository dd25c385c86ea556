/* Internal: futex(2) wait and wake on a 32-bit word, with absolute
 * CLOCK_MONOTONIC deadlines. `shared` selects the process-shared form (the
 * kernel keys the wait on the physical page) over the cheaper private one. */
#ifndef CREW_SRC_FUTEX_H
#define CREW_SRC_FUTEX_H

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "deadline.h"

/* Sleep while *word == expected, until woken or the deadline passes.
 * Returns 0 (woken, or maybe spuriously), -EAGAIN (the word had already
 * changed), -EINTR, or -ETIMEDOUT. Callers re-check their predicate. */
static inline int crew__futex_wait(_Atomic uint32_t *word, uint32_t expected, const crew__deadline *d,
                                   bool shared) {
    int op = FUTEX_WAIT_BITSET | (shared ? 0 : FUTEX_PRIVATE_FLAG);
    struct timespec ts, *tsp = NULL;
    if (d && !crew__deadline_forever(d)) {
        ts = crew__deadline_ts(d);
        tsp = &ts;
    }
    long rc = syscall(SYS_futex, (uint32_t *)word, op, expected, tsp, NULL, FUTEX_BITSET_MATCH_ANY);
    return rc == 0 ? 0 : -errno;
}

/* Wake up to n waiters (INT_MAX for all). */
static inline void crew__futex_wake(_Atomic uint32_t *word, int n, bool shared) {
    int op = FUTEX_WAKE | (shared ? 0 : FUTEX_PRIVATE_FLAG);
    syscall(SYS_futex, (uint32_t *)word, op, n, NULL, NULL, 0);
}

/* A pause for spin loops. */
static inline void crew__cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

#endif
