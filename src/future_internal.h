/* Internal to future and pool: futures allocated with room for the pool's
 * task record, completed with a result written in place, and the hook by
 * which a pool worker that waits on futures runs other tasks instead of
 * blocking (so nested waits never deadlock). */
#ifndef CREW_SRC_FUTURE_INTERNAL_H
#define CREW_SRC_FUTURE_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

#include "crew/future.h"
#include "deadline.h"
#include "tid.h"

/* crew_future_create with `extra` more bytes (max_align_t aligned) in the
 * same allocation, returned in *extra_out (they live as long as the future),
 * and `refs` references to start with. */
int crew__future_create_ex(crew_future **out, size_t result_size, size_t extra, void **extra_out, int refs);

/* Where the result_size bytes of the result live. The completing side may
 * write them while the future is RUNNING, then call crew__future_finish. */
void *crew__future_result(crew_future *future);

/* Complete a RUNNING future: error 0 means the result is already in place;
 * else the error code (< 0). CREW_EINVAL if it is not running. */
int crew__future_finish(crew_future *future, int error);

/* A pool worker installs this for its thread: get, wait and the as_completed
 * iterator call it instead of sleeping. It must run other work until
 * ready(arg) holds (0) or the deadline passes (CREW_ETIMEDOUT). */
typedef int (*crew__future_help_fn)(bool (*ready)(void *arg), void *arg, const crew__deadline *d);
extern CREW__TLS crew__future_help_fn crew__future_helper;

#endif
