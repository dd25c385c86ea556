/* Threads: the counterparts of threading.Thread, threading.Timer,
 * current_thread, active_count, enumerate and os.process_cpu_count.
 *
 * A crew_thread is an opaque handle. The thread and its handle are separate
 * lifetimes: crew_thread_free releases the handle; a thread still running
 * then goes on and cleans up after itself.
 *
 * Non-daemon threads are joined at process exit (when main returns or exit()
 * is called), as Python waits for them before the interpreter ends; daemon
 * threads simply stop when the process does.
 *
 * In a forked child only the forking thread exists: handles of the parent's
 * other threads report them finished (join returns at once, is_alive is
 * false), as Python's after-fork hook does.
 */
#ifndef CREW_THREAD_H
#define CREW_THREAD_H

#include <stdbool.h>
#include <stddef.h>
#include "export.h"

typedef struct crew_thread crew_thread;

/* A thread's body. Its return value is handed to crew_thread_join. */
typedef int (*crew_thread_fn)(void *arg);

typedef struct crew_thread_options {
    const char *name;          /* copied; default "Thread-N". The first 15
                                  bytes also become the OS thread name. */
    size_t stack_size;         /* bytes; 0 = the system default */
    bool daemon;               /* true: not joined at process exit */
} crew_thread_options;

/* The longest name kept, including the terminating NUL. */
#define CREW_THREAD_NAME_MAX 64

/* Start a thread running fn(arg); opts may be NULL. Returns 0 and the handle
 * in *out; CREW_EINVAL (NULL fn/out, stack size below the minimum),
 * CREW_EAGAIN (the system refused a thread), CREW_ENOMEM. */
CREW_API int crew_thread_start(crew_thread **out, crew_thread_fn fn, void *arg,
                               const crew_thread_options *opts);

/* Wait up to `timeout` for the thread to finish; on 0, *result (if not NULL)
 * gets fn's return value. CREW_ETIMEDOUT if it is still running (0 timeout
 * included), CREW_EDEADLK when a thread joins itself. Many threads may join
 * the same thread. Blocks. */
CREW_API int crew_thread_join(crew_thread *thread, double timeout, int *result);

/* True from start until fn has returned. */
CREW_API bool crew_thread_is_alive(const crew_thread *thread);

/* Release the handle (NULL is fine). A running thread is not stopped and, if
 * not a daemon, is still joined at exit. Never blocks. */
CREW_API void crew_thread_free(crew_thread *thread);

/* The thread's name (valid while the handle is), OS thread id (like
 * threading.get_native_id; unique among live threads of the system; known once
 * crew_thread_start returns) and daemon flag. */
CREW_API const char *crew_thread_name(const crew_thread *thread);
CREW_API long crew_thread_id(const crew_thread *thread);
CREW_API bool crew_thread_daemon(const crew_thread *thread);

/* The calling thread's handle, or NULL when crew did not start it (the main
 * thread, or a thread started with pthread_create directly). */
CREW_API crew_thread *crew_thread_current(void);

/* The calling thread's OS id (threading.get_native_id). Fork-safe. */
CREW_API long crew_thread_current_id(void);

/* Copy the calling thread's name into buf: its crew name, "MainThread" for
 * the process's initial thread, else its OS name. Returns the full length
 * (as snprintf), or CREW_EINVAL for NULL buf with nonzero size. */
CREW_API int crew_thread_current_name(char *buf, size_t size);

/* One live thread, as crew_thread_enumerate reports it. */
typedef struct crew_thread_info {
    long id;                   /* OS thread id */
    char name[CREW_THREAD_NAME_MAX];
    bool daemon;
    bool main;                 /* the process's initial thread */
} crew_thread_info;

/* Number of live threads: the main thread plus every crew thread that has
 * started and not yet returned (threading.active_count). */
CREW_API int crew_thread_active_count(void);

/* Fill out[0..cap-1] with the live threads (main thread first) and return how
 * many there are, which may exceed cap (threading.enumerate). */
CREW_API int crew_thread_enumerate(crew_thread_info *out, size_t cap);

/* threading.Timer: start a thread that calls fn(arg) after `delay` seconds
 * unless cancelled first. Join, free, is_alive work on it as on any thread;
 * join gives fn's result, or CREW_ECANCELED as result if it was cancelled. */
CREW_API int crew_timer_start(crew_thread **out, double delay, crew_thread_fn fn, void *arg,
                              const crew_thread_options *opts);

/* Cancel a timer: 0 if fn will now never run (cancelling twice is fine);
 * CREW_EBUSY if it has already started (or finished); CREW_EINVAL if `timer`
 * is not a timer. Never blocks. */
CREW_API int crew_timer_cancel(crew_thread *timer);

/* The number of CPUs this process may use, >= 1: the CPUs in its affinity
 * mask (sched_getaffinity, as taskset or a container's cpuset set it),
 * lowered to the cgroup CPU quota rounded up (cgroup v2 cpu.max, or v1
 * cpu.cfs_quota_us / cpu.cfs_period_us, the tightest along the cgroup path).
 * The environment variable CREW_CPU_COUNT, a positive integer, overrides
 * both. Read afresh on each call; fork-safe. */
CREW_API int crew_cpu_count(void);

#endif
