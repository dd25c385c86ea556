/* Time: timeouts are double seconds as in Python. 0 means try once without
 * blocking, CREW_FOREVER blocks until the thing happens, a negative or NaN
 * timeout is CREW_EINVAL. Internally each call turns its timeout into one
 * CLOCK_MONOTONIC deadline, so wall-clock changes never shorten or stretch it. */
#ifndef CREW_CLOCK_H
#define CREW_CLOCK_H

#include <math.h>
#include "export.h"

/* Block with no time limit (positive infinity; any timeout of 2^62 ns or more
 * is treated the same). */
#define CREW_FOREVER HUGE_VAL

/* Seconds on the monotonic clock (time.monotonic). Its zero is arbitrary;
 * only differences mean something. Never fails; fork-safe. */
CREW_API double crew_now(void);

/* Sleep for `seconds` (time.sleep), resuming after signals until the whole
 * time has passed. Returns 0, or CREW_EINVAL for a negative or NaN value.
 * Blocks; fork-safe. CREW_FOREVER sleeps forever. */
CREW_API int crew_sleep(double seconds);

#endif
