/* crew_now and crew_sleep over CLOCK_MONOTONIC. */
#include "crew/clock.h"

#include <errno.h>

#include "deadline.h"

double crew_now(void) { return (double)crew__now_ns() * 1e-9; }

int crew_sleep(double seconds) {
    crew__deadline d;
    int rc = crew__deadline_init(&d, seconds);
    if (rc != 0) return rc;
    for (;;) {
        if (crew__deadline_forever(&d)) {
            struct timespec day = {86400, 0};
            nanosleep(&day, NULL);
            continue;
        }
        struct timespec ts = crew__deadline_ts(&d);
        /* Absolute sleep: resuming after EINTR cannot drift. */
        rc = clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
        if (rc != EINTR) return 0;
    }
}
