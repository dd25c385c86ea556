/* Internal to the shm module: the segment-name tracker that src/shm.c uses,
 * and hooks that let tests/test_shm.c look inside the arena. */
#ifndef CREW_SRC_SHM_INTERNAL_H
#define CREW_SRC_SHM_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* ------------------------------------------------------------- tracker */

/* Register `name` (a validated "/name") with this process family's tracker,
 * starting the tracker first if this process has none (inherited or its
 * own). Returns 0, or CREW_EAGAIN / CREW_EMFILE / CREW_ENOMEM when no
 * tracker can be started. Call it before creating the segment, so that no
 * moment exists where the segment is on disk but unknown to the tracker. */
int crew__shm_track(const char *name);

/* Cancel one registration of `name`: after crew_shm_unlink removed it, or
 * when a registered create did not create it. Does nothing if this process
 * has no tracker. Best effort: never fails. */
void crew__shm_untrack(const char *name);

/* The tracker's process id as this process knows it (0 if it has none).
 * For tests. */
pid_t crew__shm_tracker_pid(void);

/* --------------------------------------------------------------- arena */

/* Parse a size with an optional K, M, G or T suffix (powers of 1024, either
 * case), as CREW_ARENA_RESERVE takes it. 0 and *out, or CREW_EINVAL (empty,
 * stray characters, overflow). */
int crew__shm_parse_size(const char *s, size_t *out);

/* Walk the arena under its lock and check every invariant of the allocator
 * (blocks tile the heap, no two free neighbours, free lists and bitmap agree
 * with the headers, the used count). 0 if all hold, else a positive number
 * naming the first one that failed; CREW_EINVAL before setup. For tests. */
int crew__shm_arena_check(void);

/* Test hook: when set to n > 0 in a process, that process _exit()s with
 * status CREW__SHM_CRASH_STATUS at crash point n inside the allocator's
 * critical section, to test recovery from a death holding the lock. */
extern int crew__shm_crash_point;
#define CREW__SHM_CRASH_STATUS 77
enum {
    CREW__SHM_CRASH_ALLOC_UNLINKED = 1, /* a free block taken off its list */
    CREW__SHM_CRASH_ALLOC_SPLIT,        /* remainder header written, not committed */
    CREW__SHM_CRASH_ALLOC_MARKED,       /* block committed as used, not returned */
    CREW__SHM_CRASH_TOP_HEADER,         /* header at the top written, top not moved */
    CREW__SHM_CRASH_GROWN,              /* file grown, size not recorded */
    CREW__SHM_CRASH_FREE_MARKED,        /* block marked free, not yet listed */
    CREW__SHM_CRASH_FREE_MERGED_NEXT,   /* merged with the next block */
    CREW__SHM_CRASH_FREE_MERGED_PREV,   /* merged into the previous block */
    CREW__SHM_CRASH_FREE_LISTED,        /* listed, neighbour flags not updated */
    CREW__SHM_CRASH_COUNT
};

#endif
