/* Internal: pidfd(2) calls by system call number (glibc 2.36 has wrappers,
 * older ones do not), each returning a negative errno value on failure.
 * A pidfd names one process for its whole life: a signal or wait through it
 * can never reach a later process that reuses the pid. */
#ifndef CREW_SRC_PIDFD_H
#define CREW_SRC_PIDFD_H

#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_send_signal
#define SYS_pidfd_send_signal 424
#endif
#ifndef P_PIDFD
#define P_PIDFD 3
#endif

/* Test hook: when set, crew__pidfd_open fails with -ENOSYS, so the pid-based
 * fallback paths run on kernels that have pidfds. Defined in process.c. */
extern bool crew__pidfd_disabled;

/* A pidfd (close-on-exec) for the process `pid`. Linux 5.3. */
static inline int crew__pidfd_open(pid_t pid) {
    if (crew__pidfd_disabled) return -ENOSYS;
    long fd = syscall(SYS_pidfd_open, pid, 0);
    return fd >= 0 ? (int)fd : -errno;
}

/* Send `sig` to the process behind `pidfd`; -ESRCH once it has been reaped.
 * Linux 5.1. */
static inline int crew__pidfd_send_signal(int pidfd, int sig) {
    return syscall(SYS_pidfd_send_signal, pidfd, sig, NULL, 0) == 0 ? 0 : -errno;
}

/* waitid(2) on the child behind `pidfd` (P_PIDFD, Linux 5.4) or, with
 * pidfd < 0, on `pid`. 0 with info->si_pid == 0 when WNOHANG finds it still
 * running. */
static inline int crew__waitid(int pidfd, pid_t pid, siginfo_t *info, int options) {
    memset(info, 0, sizeof *info);
    int rc = pidfd >= 0 ? waitid((idtype_t)P_PIDFD, (id_t)pidfd, info, options)
                        : waitid(P_PID, (id_t)pid, info, options);
    return rc == 0 ? 0 : -errno;
}

#endif
