/* Internal: a call of the user's code by a pool worker (a run of items for
 * submit, map and imap; a sub-range for `for`; a leaf for reduce).
 *
 * Every place where a pool runs user code builds a crew__call and hands it
 * to crew__call_run. In a thread pool that runs it right there; in a
 * process pool the worker thread ships it to its own child process
 * (proc.c), which runs it and reports back, so all the scheduling above
 * (work stealing, futures, callbacks, progress) stays in the parent and is
 * the same for both kinds.
 */
#ifndef CREW_SRC_POOL_CALL_H
#define CREW_SRC_POOL_CALL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include "crew/pool.h"

enum { CREW__CALL_ITEMS, CREW__CALL_FOR, CREW__CALL_REDUCE };

typedef struct crew__call {
    int op;
    void *ctx;
    /* ITEMS: fn over items first .. first+n-1; item j reads in + j*in_size
     * (in itself when in_size is 0) and writes out + j*out_size (out itself
     * when out_size is 0). keep_going: every item runs and its code goes to
     * rcs[j]; else the run stops at the first failure. */
    crew_task_fn fn;
    const void *in;
    size_t in_size;
    void *out;
    size_t out_size;
    size_t first, n;
    bool keep_going;
    int *rcs;
    /* FOR: for_body(b, e, ctx). REDUCE: red_body(b, e, acc, ctx). */
    int (*for_body)(size_t b, size_t e, void *ctx);
    int (*red_body)(size_t b, size_t e, void *acc, void *ctx);
    size_t b, e;
    void *acc;
    size_t acc_size;
    /* Checked before each item (may be NULL): stop when either is set. */
    _Atomic int *stop;
    _Atomic int *stop2;
    /* Out: ITEMS without keep_going, how many items completed (the failed
     * or skipped one is first + ran). */
    size_t ran;
} crew__call;

typedef struct crew__worker crew__worker;

/* Run the call here (a thread pool, or inside a process pool's child).
 * Returns 0 or the failing code (ITEMS: of item first + ran). */
int crew__call_exec(crew__call *call);

/* Run the call for worker w (NULL: here): in w's child process for a
 * process pool. Adds CREW_EWORKERDIED when the child died running it (after
 * the pool's retries); with keep_going the dead item's code is set in rcs
 * and the rest still runs. */
int crew__call_run(crew__worker *w, crew__call *call);

#endif
