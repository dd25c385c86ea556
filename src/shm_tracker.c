/* The segment-name tracker: unlinks the named segments a process family
 * created, once every process of that family has ended, however it ended.
 *
 * Processes. A family is a process and the processes forked from it. The
 * first member to create a non-persistent segment starts the tracker: a
 * socketpair (AF_UNIX, SOCK_SEQPACKET, close-on-exec), then a double fork
 * (the intermediate child forks the tracker and exits at once, and the
 * caller reaps it), so the tracker is nobody's child in the program and a
 * waitpid() there never sees it. The family keeps one end of the pair, the
 * tracker the other. The family's end is inherited by every later fork, so
 * children register with their parent's tracker; the tracker's read sees
 * end-of-file exactly when the last copy of that end is closed, that is when
 * the last member has exited, exec'd, or been killed (SIGKILL included).
 *
 * Messages. "+/name\n" registers one creation, "-/name\n" cancels one (after
 * crew_shm_unlink, or when a create turned out to attach to a segment that
 * already existed). Each is one send() of at most 253 bytes on a
 * SOCK_SEQPACKET socket, so concurrent senders never interleave and the
 * tracker reads whole records; MSG_NOSIGNAL turns a dead tracker into EPIPE
 * rather than SIGPIPE. The tracker counts registrations per name and, at
 * end-of-file, unlinks every name whose count is above zero, then exits.
 * A segment is registered *before* it is created, so there is no moment
 * where it exists on disk but the tracker does not know it.
 *
 * Async-signal safety. The program may have other threads when it forks, so
 * the intermediate child and the tracker make raw system calls only (the
 * instruction itself on x86-64 and arm64, which no sanitizer intercepts),
 * touch no lock, allocate only with mmap, and are built without sanitizer
 * instrumentation or stack protector. They are started with _Fork, which
 * runs no atfork handlers (neither the user's nor ours, one of which takes
 * `tracker_mu`, held by the starter). The tracker blocks every signal it can
 * (SIGINT from a terminal, SIGTERM, SIGHUP from a closing session, SIGPIPE),
 * starts its own session, moves to "/", closes every descriptor but its end
 * of the pair before it says hello, so a program never waits on a
 * descriptor the tracker holds. Like any forked child it shares the
 * program's pages copy-on-write until the program's family ends: pages the
 * program writes afterwards are copied (see docs/shm.md).
 *
 * Threads of the program. `tracker_mu` serialises starts and restarts; it is
 * held across fork() by an atfork handler, so a child never inherits it
 * locked and never sees a half-started tracker. Senders read `tracker_fd`
 * without the mutex. A restart (the tracker was killed: send fails with
 * EPIPE) installs the new socket on the *same* descriptor number with dup3,
 * so a sender holding the old number simply reaches the new tracker.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "crew/error.h"
#include "crew/shm.h"
#include "shm_internal.h"

/* Serialises tracker starts; held across fork() (atfork prepare/parent/child). */
static pthread_mutex_t tracker_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t tracker_once = PTHREAD_ONCE_INIT;
/* The family's end of the tracker socket (-1 before the first start), the
 * tracker's pid, and the socket's inode (a program that closed the
 * descriptor and reused its number must not get our messages). Written
 * under tracker_mu, then published by the release increment of tracker_gen;
 * senders read them without the mutex, after an acquire load of
 * tracker_gen. Inherited by fork, which is what makes a child use its
 * parent's tracker. */
static _Atomic int tracker_fd = -1;
static _Atomic pid_t tracker_pid;
static _Atomic uint64_t tracker_ino;
/* Bumped by every start (under tracker_mu), so that of several senders that
 * all found the tracker dead, only the first restarts it. */
static _Atomic unsigned tracker_gen;

/* Message: op, "/name", '\n'. */
#define MSG_MAX (1 + 1 + CREW_SHM_NAME_MAX + 1)

/* ---------------------------------------------------- the tracker itself */

/* Everything below up to "in the program" runs in the forked children: no
 * sanitizer instrumentation (their runtimes are in an unknown state after a
 * fork they did not see), no stack protector (it reads thread-local
 * storage), no libc. */
#if defined(__clang__)
#define CHILD_CODE __attribute__((no_sanitize("address", "thread", "undefined"), no_stack_protector, noinline))
#else
#define CHILD_CODE                                                                          \
    __attribute__((no_sanitize_address, no_sanitize_thread, no_sanitize_undefined,          \
                   no_stack_protector, noinline))
#endif

#if defined(__SANITIZE_THREAD__)
#define TSAN_BUILD 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define TSAN_BUILD 1
#endif
#endif

#ifndef SYS_close_range
#define SYS_close_range 436
#endif

/* Raw system calls, returning -errno on failure as the kernel does. On
 * x86-64 and arm64 they are the instruction itself, so no sanitizer
 * interceptor runs in the tracker; elsewhere they go through libc's
 * syscall(). */
#if defined(__x86_64__)
#define RAW_SYSCALLS 1
CHILD_CODE static long sc6(long n, long a, long b, long c, long d, long e, long f) {
    register long r10 __asm__("r10") = d;
    register long r8 __asm__("r8") = e;
    register long r9 __asm__("r9") = f;
    long ret;
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    return ret;
}
#elif defined(__aarch64__)
#define RAW_SYSCALLS 1
CHILD_CODE static long sc6(long n, long a, long b, long c, long d, long e, long f) {
    register long x8 __asm__("x8") = n;
    register long x0 __asm__("x0") = a;
    register long x1 __asm__("x1") = b;
    register long x2 __asm__("x2") = c;
    register long x3 __asm__("x3") = d;
    register long x4 __asm__("x4") = e;
    register long x5 __asm__("x5") = f;
    __asm__ volatile("svc 0"
                     : "+r"(x0)
                     : "r"(x8), "r"(x1), "r"(x2), "r"(x3), "r"(x4), "r"(x5)
                     : "memory");
    return x0;
}
#else
#define RAW_SYSCALLS 0
CHILD_CODE static long sc6(long n, long a, long b, long c, long d, long e, long f) {
    long r = syscall(n, a, b, c, d, e, f);
    return r == -1 ? -errno : r;
}
#endif

#define SC0(n) sc6((n), 0, 0, 0, 0, 0, 0)
#define SC1(n, a) sc6((n), (long)(a), 0, 0, 0, 0, 0)
#define SC2(n, a, b) sc6((n), (long)(a), (long)(b), 0, 0, 0, 0)
#define SC3(n, a, b, c) sc6((n), (long)(a), (long)(b), (long)(c), 0, 0, 0)
#define SC4(n, a, b, c, d) sc6((n), (long)(a), (long)(b), (long)(c), (long)(d), 0, 0)
#define SC5(n, a, b, c, d, e) sc6((n), (long)(a), (long)(b), (long)(c), (long)(d), (long)(e), 0)
#define SC6(n, a, b, c, d, e, f) sc6((n), (long)(a), (long)(b), (long)(c), (long)(d), (long)(e), (long)(f))

typedef struct entry {
    uint32_t count;            /* creations registered and not cancelled */
    uint32_t len;              /* of name, with its '/' */
    char name[CREW_SHM_NAME_MAX + 2];
} entry;

typedef struct table {
    entry *e;
    size_t len, cap;
} table;

CHILD_CODE static _Noreturn void sys_exit(int code) {
    for (;;) SC1(SYS_exit_group, code);
}

/* A byte loop the compiler must not turn into a memcpy call (that would be
 * libc, or a sanitizer's interceptor). */
CHILD_CODE static void copy_bytes(char *dst, const char *src, size_t n) {
    volatile char *d = dst;
    for (size_t i = 0; i < n; i++) d[i] = src[i];
}

CHILD_CODE static bool same_name(const entry *e, const char *name, size_t len) {
    if (e->len != len) return false;
    const volatile char *a = e->name;
    for (size_t i = 0; i < len; i++)
        if (a[i] != name[i]) return false;
    return true;
}

CHILD_CODE static entry *table_find(table *t, const char *name, size_t len) {
    for (size_t i = 0; i < t->len; i++)
        if (same_name(&t->e[i], name, len)) return &t->e[i];
    return NULL;
}

CHILD_CODE static void table_add(table *t, const char *name, size_t len) {
    entry *e = table_find(t, name, len);
    if (e != NULL) {
        e->count++;
        return;
    }
    if (t->len == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 64;
        long p;
        if (t->e == NULL) {
            p = SC6(SYS_mmap, 0, cap * sizeof(entry), PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        } else {
            p = SC5(SYS_mremap, t->e, t->cap * sizeof(entry), cap * sizeof(entry), MREMAP_MAYMOVE, 0);
        }
        /* Out of memory: this name cannot be tracked; nothing better to do. */
        if (p < 0 && p > -4096) return;
        t->e = (entry *)p;
        t->cap = cap;
    }
    e = &t->e[t->len++];
    e->count = 1;
    e->len = (uint32_t)len;
    copy_bytes(e->name, name, len);
    e->name[len] = '\0';
}

CHILD_CODE static void table_cancel(table *t, const char *name, size_t len) {
    entry *e = table_find(t, name, len);
    if (e == NULL) return; /* never registered here, or already cancelled */
    if (--e->count == 0) {
        entry *last = &t->e[--t->len];
        if (e != last) copy_bytes((char *)e, (const char *)last, sizeof *e);
    }
}

/* A record is "+/name\n" or "-/name\n" with a valid name. */
CHILD_CODE static void tracker_handle(table *t, const char *buf, size_t n) {
    if (n < 4 || n > MSG_MAX || buf[n - 1] != '\n' || buf[1] != '/') return;
    const char *name = buf + 1;
    size_t len = n - 2;
    for (size_t i = 1; i < len; i++)
        if (name[i] == '/' || name[i] == '\0') return;
    if (buf[0] == '+') table_add(t, name, len);
    else if (buf[0] == '-') table_cancel(t, name, len);
}

CHILD_CODE static void close_all_but(int keep) {
    if (keep > 0 && SC3(SYS_close_range, 0u, (unsigned)keep - 1, 0u) != 0) goto slow;
    if (SC3(SYS_close_range, (unsigned)keep + 1, ~0u, 0u) == 0) return;
slow:;
    /* Kernels before 5.9: close one by one up to the descriptor limit. */
    struct rlimit rl = {1024, 1024};
    SC4(SYS_prlimit64, 0, RLIMIT_NOFILE, 0, &rl);
    long max = rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > (1u << 20) ? 1 << 20 : (long)rl.rlim_cur;
    for (long fd = 0; fd < max; fd++)
        if (fd != keep) SC1(SYS_close, fd);
}

CHILD_CODE static _Noreturn void tracker_main(int sock) {
    uint64_t all = ~(uint64_t)0; /* the kernel's sigset: 64 bits */
    SC4(SYS_rt_sigprocmask, SIG_SETMASK, &all, 0, sizeof all);
    SC0(SYS_setsid);
    SC1(SYS_chdir, "/");
    close_all_but(sock);
    SC5(SYS_prctl, PR_SET_NAME, "crew-shm-track", 0, 0, 0);

    /* Hello: our pid, once nothing of the program's is held any more. */
    int32_t me = (int32_t)SC0(SYS_getpid);
    if (SC3(SYS_write, sock, &me, sizeof me) != (long)sizeof me) sys_exit(1);

    table t = {NULL, 0, 0};
    char buf[MSG_MAX + 1];
    for (;;) {
        long n = SC3(SYS_read, sock, buf, sizeof buf);
        if (n > 0) tracker_handle(&t, buf, (size_t)n);
        else if (n != -EINTR) break; /* end-of-file: the family is gone */
    }

    char path[sizeof "/dev/shm" + CREW_SHM_NAME_MAX + 2];
    copy_bytes(path, "/dev/shm", 8);
    for (size_t i = 0; i < t.len; i++) {
        copy_bytes(path + 8, t.e[i].name, t.e[i].len + 1);
        SC3(SYS_unlinkat, AT_FDCWD, path, 0);
    }
    sys_exit(0);
}

/* The intermediate child: fork the tracker and leave, so the tracker is
 * re-parented away from the program. */
CHILD_CODE static _Noreturn void tracker_intermediate(int family_end, int tracker_end) {
    SC1(SYS_close, family_end);
    pid_t pid = _Fork();
    if (pid == 0) tracker_main(tracker_end);
    sys_exit(pid > 0 ? 0 : 1);
}

/* ------------------------------------------------------- in the program */

static void atfork_prepare(void) { pthread_mutex_lock(&tracker_mu); }
static void atfork_release(void) { pthread_mutex_unlock(&tracker_mu); }
static void tracker_register_atfork(void) {
    pthread_atfork(atfork_prepare, atfork_release, atfork_release);
}

static int errno_code(int e) {
    switch (e) {
    case EMFILE:
    case ENFILE:
        return CREW_EMFILE;
    case ENOMEM:
    case ENOBUFS:
        return CREW_ENOMEM;
    default:
        return CREW_EAGAIN;
    }
}

/* Start a tracker. With `replace` >= 0 (a restart) the new socket takes over
 * that descriptor number. Called with tracker_mu held. */
static int tracker_start(int replace) {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) return errno_code(errno);
    pid_t mid = _Fork();
    if (mid == 0) tracker_intermediate(sv[0], sv[1]);
    int fork_errno = errno;
    close(sv[1]);
    if (mid < 0) {
        close(sv[0]);
        return errno_code(fork_errno);
    }
    /* The hello comes once the tracker has closed the program's descriptors;
     * end-of-file instead means it never started. */
    int32_t pid = 0;
    ssize_t n;
    do {
        n = recv(sv[0], &pid, sizeof pid, 0);
    } while (n < 0 && errno == EINTR);
    /* The intermediate has exited or is about to; a SIGCHLD handler of the
     * program may have reaped it already (ECHILD). */
    while (waitpid(mid, NULL, 0) < 0 && errno == EINTR) {
    }
    if (n != (ssize_t)sizeof pid || pid <= 0) {
        close(sv[0]);
        return CREW_EAGAIN;
    }
    int fd = sv[0];
    if (replace >= 0 && dup3(sv[0], replace, O_CLOEXEC) >= 0) {
        close(sv[0]);
        fd = replace;
    }
    /* If dup3 failed, the old descriptor stays open (senders that still
     * hold its number get EPIPE and come back here); the new one is used. */
    struct stat st;
    if (fstat(fd, &st) != 0) st.st_ino = 0;
    atomic_store_explicit(&tracker_ino, (uint64_t)st.st_ino, memory_order_relaxed);
    atomic_store_explicit(&tracker_pid, pid, memory_order_relaxed);
    atomic_store_explicit(&tracker_fd, fd, memory_order_relaxed);
    atomic_fetch_add_explicit(&tracker_gen, 1, memory_order_release); /* publishes the three */
    return 0;
}

static int tracker_send(int fd, const char *msg, size_t len) {
    for (;;) {
        ssize_t n = send(fd, msg, len, MSG_NOSIGNAL);
        if (n == (ssize_t)len) return 0;
        if (n < 0 && errno == EINTR) continue;
        return n < 0 ? -errno : CREW_EPROTO;
    }
}

/* Whether `fd` is still the socket tracker_start made (the program may have
 * closed it, and the number may name something else now). */
static bool fd_is_ours(int fd) {
    struct stat st;
    return fd >= 0 && fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode) &&
           (uint64_t)st.st_ino == atomic_load_explicit(&tracker_ino, memory_order_relaxed);
}

static size_t make_msg(char *msg, char op, const char *name) {
    size_t len = strlen(name);
    msg[0] = op;
    memcpy(msg + 1, name, len);
    msg[len + 1] = '\n';
    return len + 2;
}

int crew__shm_track(const char *name) {
    char msg[MSG_MAX];
    size_t len = make_msg(msg, '+', name);
    pthread_once(&tracker_once, tracker_register_atfork);
    for (int attempt = 0; attempt < 3; attempt++) {
        unsigned gen = atomic_load_explicit(&tracker_gen, memory_order_acquire);
        int fd = atomic_load_explicit(&tracker_fd, memory_order_relaxed);
        bool ours = fd_is_ours(fd);
        if (ours) {
            int rc = tracker_send(fd, msg, len);
            if (rc == 0) return 0;
            if (rc != -EPIPE && rc != -ECONNRESET && rc != -ENOTCONN) return CREW_EAGAIN;
        }
        /* No tracker yet, it is dead, or the program closed our descriptor:
         * (re)start it unless another thread did so since we looked. A dead
         * tracker's descriptor number is reused, so that other threads
         * about to send on it reach the new one. */
        pthread_mutex_lock(&tracker_mu);
        int rc = 0;
        if (atomic_load_explicit(&tracker_gen, memory_order_relaxed) == gen)
            rc = tracker_start(ours ? fd : -1);
        pthread_mutex_unlock(&tracker_mu);
        if (rc != 0) return rc;
    }
    return CREW_EAGAIN;
}

void crew__shm_untrack(const char *name) {
    (void)atomic_load_explicit(&tracker_gen, memory_order_acquire);
    int fd = atomic_load_explicit(&tracker_fd, memory_order_relaxed);
    if (!fd_is_ours(fd)) return;
    char msg[MSG_MAX];
    size_t len = make_msg(msg, '-', name);
    (void)tracker_send(fd, msg, len);
}

pid_t crew__shm_tracker_pid(void) {
    (void)atomic_load_explicit(&tracker_gen, memory_order_acquire);
    if (atomic_load_explicit(&tracker_fd, memory_order_relaxed) < 0) return 0;
    return atomic_load_explicit(&tracker_pid, memory_order_relaxed);
}
