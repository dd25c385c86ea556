/* Processes: the counterparts of multiprocessing.Process, active_children
 * and current_process().name.
 *
 * crew_process_start forks a child that runs fn(arg) and exits with its
 * return value; the parent gets an opaque handle. The child is a copy of the
 * whole process made by fork(), so fn and arg are valid there as they are in
 * the parent (Python's "fork" start method); memory written afterwards is
 * not shared unless it lies in shared memory (see shm.h).
 *
 * Every child is watched through a pidfd, so waits and signals reach exactly
 * that child and never a later process that reuses its pid. Children die
 * with their parent process (PR_SET_PDEATHSIG, SIGKILL). At parent exit,
 * non-daemon children are joined and daemon children terminated, as Python
 * does.
 *
 * A handle may be used from any thread. In a forked child, the parent's
 * handles do not describe children of the child: calls on them return
 * CREW_ECHILD (is_alive is false), and the child's children list starts
 * empty. See docs/process.md for what a child may safely do when the parent
 * has other threads.
 */
#ifndef CREW_PROCESS_H
#define CREW_PROCESS_H

#include <stdbool.h>
#include <stddef.h>
#include "export.h"

typedef struct crew_process crew_process;

/* A child's body, run in the child process. Its return value is the child's
 * exit status: 0..255 as is, anything else (a negative CREW_E* code, say) 1. */
typedef int (*crew_process_fn)(void *arg);

typedef struct crew_process_options {
    const char *name;          /* copied; default "Process-N" (in a child,
                                  "Process-<its id>:N", as in Python) */
    bool daemon;               /* true: terminated, not joined, at parent exit */
} crew_process_options;

/* The longest name kept, including the terminating NUL. */
#define CREW_PROCESS_NAME_MAX 64

/* How long exit waits for daemon children after SIGTERM before SIGKILL. */
#define CREW_PROCESS_EXIT_GRACE 1.0

/* Fork a child running fn(arg); opts may be NULL. The child flushes every
 * stdio stream and _exits with fn's status (it never returns into the
 * caller's code and runs no atexit handler); stdio is flushed in the parent
 * before the fork so buffered output is not written twice. Returns 0 and the
 * handle in *out; CREW_EINVAL (NULL out or fn), CREW_EAGAIN (process or
 * thread limit), CREW_ENOMEM. Blocks while the child is forked. Thread-safe;
 * usable in a forked child (it then starts children of its own). */
CREW_API int crew_process_start(crew_process **out, crew_process_fn fn, void *arg,
                                const crew_process_options *opts);

/* Wait up to `timeout` for the child to end, and reap it (exactly once,
 * whoever gets there first). 0 once it has ended; CREW_ETIMEDOUT if it is
 * still running (a 0 timeout included); CREW_ECHILD in a process that did not
 * start it. Many threads may join the same child. Blocks. */
CREW_API int crew_process_join(crew_process *process, double timeout);

/* True from start until the child has ended (it is reaped if it has, as
 * Python's is_alive does). False in a process that did not start it.
 * Never blocks. */
CREW_API bool crew_process_is_alive(const crew_process *process);

/* The child's exit code: 0 and *code = its exit status, or minus the signal
 * number that killed it (-9 for SIGKILL). CREW_EBUSY while it runs (Python's
 * None); CREW_ECHILD if it is unknown because something else reaped the child
 * (waitpid(-1), SIGCHLD ignored) or in a process that did not start it;
 * CREW_EINVAL for NULL arguments. Reaps an ended child; never blocks. */
CREW_API int crew_process_exitcode(const crew_process *process, int *code);

/* Send SIGTERM (terminate) or SIGKILL (kill) to the child. 0 if sent, or if
 * the child has already ended: then nothing is sent to anything. CREW_ECHILD
 * in a process that did not start it. Does not wait for the child to end;
 * join does. Never blocks. */
CREW_API int crew_process_terminate(crew_process *process);
CREW_API int crew_process_kill(crew_process *process);

/* The child's pid (0 for NULL); its name (valid while the handle is; NULL for
 * NULL); its daemon flag. */
CREW_API int crew_process_pid(const crew_process *process);
CREW_API const char *crew_process_name(const crew_process *process);
CREW_API bool crew_process_daemon(const crew_process *process);

/* A file descriptor that polls readable (POLLIN) once the child has ended
 * (Python's Process.sentinel; a pidfd), or -1 where pidfds are unavailable.
 * Owned by the handle: do not close it. */
CREW_API int crew_process_sentinel(const crew_process *process);

/* Release a handle (NULL is fine). The child is not stopped: a running child
 * goes on, is still listed by crew_process_children, and is still joined
 * (or, if a daemon, terminated) at parent exit. Never blocks. */
CREW_API void crew_process_free(crew_process *process);

/* multiprocessing.active_children(): reap the children of this process that
 * have ended, then store up to `max` of those still running in out[] (oldest
 * first) and return how many there are, which may exceed max (out may be
 * NULL when max is 0). Every handle stored is a new reference: release each
 * with crew_process_free, even when it is a handle the caller already holds.
 * Thread-safe; in a forked child the parent's children are not listed. */
CREW_API size_t crew_process_children(crew_process **out, size_t max);

/* The calling process's name: "MainProcess", or in a child started by
 * crew_process_start, that child's name. Valid for the life of the process;
 * fork-safe. */
CREW_API const char *crew_process_current_name(void);

#endif
