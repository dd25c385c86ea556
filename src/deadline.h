/* Internal: a timeout turned once into an absolute CLOCK_MONOTONIC deadline.
 * Every blocking path in crew takes one of these; the public double-seconds
 * timeouts are converted at the API boundary by crew__deadline_init. */
#ifndef CREW_SRC_DEADLINE_H
#define CREW_SRC_DEADLINE_H

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "crew/error.h"

/* Timeouts this long or longer (about 146 years) mean forever. */
#define CREW__FOREVER_NS ((int64_t)1 << 62)

typedef struct crew__deadline {
    int64_t ns;    /* absolute monotonic time, INT64_MAX = never */
    bool is_try;   /* the timeout was 0: try once, never block */
} crew__deadline;

static inline int64_t crew__now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Validate `timeout` and fill *d. CREW_EINVAL for negative or NaN. */
static inline int crew__deadline_init(crew__deadline *d, double timeout) {
    if (!(timeout >= 0.0)) return CREW_EINVAL; /* also catches NaN */
    d->is_try = timeout == 0.0;
    double ns = timeout * 1e9;
    if (ns >= (double)CREW__FOREVER_NS) {
        d->ns = INT64_MAX;
    } else {
        d->ns = crew__now_ns() + (int64_t)ns;
    }
    return 0;
}

static inline bool crew__deadline_forever(const crew__deadline *d) { return d->ns == INT64_MAX; }

static inline bool crew__deadline_passed(const crew__deadline *d) {
    return !crew__deadline_forever(d) && crew__now_ns() >= d->ns;
}

static inline struct timespec crew__deadline_ts(const crew__deadline *d) {
    return (struct timespec){.tv_sec = (time_t)(d->ns / 1000000000), .tv_nsec = (long)(d->ns % 1000000000)};
}

#endif
