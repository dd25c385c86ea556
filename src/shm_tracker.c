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
 * of the pair, and unmaps the memory it inherited (see drop_mappings) before
 * it says hello: so a program never waits on a descriptor the tracker holds,
 * nor pays for pages it shares with it.
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
 * x86-64 and arm64 they are the instruction itself, so the tracker needs no
 * libc at all and can drop every mapping but its own code and stack (see
 * drop_mappings); elsewhere they go through libc's syscall() and nothing is
 * dropped. */
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
CHILD_CODE __attribute__((unused)) static uintptr_t thread_pointer(void) {
    uintptr_t tp;
    __asm__("mov %%fs:0, %0" : "=r"(tp));
    return tp;
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
CHILD_CODE __attribute__((unused)) static uintptr_t thread_pointer(void) {
    uintptr_t tp;
    __asm__("mrs %0, tpidr_el0" : "=r"(tp));
    return tp;
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

/* ------------------------------------------- dropping inherited memory */

/* The tracker is a fork of the program, so it shares every page the program
 * had at that moment, copy-on-write: the heap, the arena, mapped segments.
 * Kept, those would stay allocated for as long as the family lives, however
 * the program later frees or rewrites them. So the tracker unmaps everything
 * but the object file holding its own code (with that file's bss, which
 * follows it directly), the part of its stack it will use, the pages around
 * its thread pointer (the kernel writes to the rseq area glibc registered
 * there, and kills a task whose area is gone), and the kernel's [vdso]-like
 * areas, going by /proc/self/maps. Stack and thread block are kept as
 * windows, not as the whole mapping holding them, because the kernel merges
 * neighbouring anonymous mappings (the main thread's block is often merged
 * with a large malloc'd one). If it cannot read or parse the list, it
 * keeps everything.
 * Not done under ThreadSanitizer, whose function-entry hooks stay even in
 * uninstrumented code and need the runtime's memory. */
#if RAW_SYSCALLS && !defined(TSAN_BUILD)
#define DROP_MAPPINGS 1
#else
#define DROP_MAPPINGS 0
#endif

#if DROP_MAPPINGS
typedef struct region {
    uintptr_t start, end;
    uint64_t dev, ino;
    char path[2];              /* the first two bytes of the path, 0 if none */
} region;

CHILD_CODE static const char *parse_hex(const char *p, const char *end, uint64_t *v) {
    uint64_t x = 0;
    const char *q = p;
    for (; q < end; q++) {
        unsigned d;
        if (*q >= '0' && *q <= '9') d = (unsigned)(*q - '0');
        else if (*q >= 'a' && *q <= 'f') d = (unsigned)(*q - 'a' + 10);
        else break;
        x = x << 4 | d;
    }
    *v = x;
    return q > p ? q : NULL;
}

/* "start-end perms offset major:minor inode   path" */
CHILD_CODE static bool parse_region(const char *p, size_t n, region *r) {
    const char *end = p + n;
    uint64_t a, b, major, minor;
    if ((p = parse_hex(p, end, &a)) == NULL || p == end || *p++ != '-') return false;
    if ((p = parse_hex(p, end, &b)) == NULL || p == end || *p++ != ' ') return false;
    for (int field = 0; field < 2; field++) { /* perms, offset */
        while (p < end && *p != ' ') p++;
        if (p == end) return false;
        p++;
    }
    if ((p = parse_hex(p, end, &major)) == NULL || p == end || *p++ != ':') return false;
    if ((p = parse_hex(p, end, &minor)) == NULL || p == end || *p++ != ' ') return false;
    uint64_t ino = 0;
    const char *digits = p;
    while (p < end && *p >= '0' && *p <= '9') ino = ino * 10 + (uint64_t)(*p++ - '0');
    if (p == digits) return false;
    while (p < end && *p == ' ') p++;
    r->start = (uintptr_t)a;
    r->end = (uintptr_t)b;
    r->dev = major << 32 | minor;
    r->ino = ino;
    r->path[0] = p < end ? p[0] : 0;
    r->path[1] = p + 1 < end ? p[1] : 0;
    return a < b;
}

enum { DROP_BATCH = 64 };
/* Windows kept around the stack and the thread pointer; aligned to 64 KiB,
 * a multiple of every page size Linux uses. */
#define WINDOW_ALIGN ((uintptr_t)64 << 10)

typedef struct drop_state {
    uintptr_t code;            /* an address in the file that must stay */
    uintptr_t keep[2][2];      /* windows that must stay, sorted, disjoint */
    uint64_t dev, ino;         /* the file holding the code; ino 0: unknown */
    uintptr_t file_end;        /* end of the last region of that file seen */
    int pass;                  /* 1: find the code's file; 2: collect */
    int count;                 /* ranges collected in this scan */
    bool full;                 /* more to drop than one batch holds */
    uintptr_t drop[DROP_BATCH][2];
} drop_state;

CHILD_CODE static void drop_visit(drop_state *st, const region *r) {
    if (st->pass == 1) {
        if (r->start <= st->code && st->code < r->end) {
            st->dev = r->dev;
            st->ino = r->ino;
        }
        return;
    }
    if ((r->ino != 0 && r->ino == st->ino && r->dev == st->dev) ||
        (r->path[0] == 0 && r->start == st->file_end)) { /* our file, its bss */
        st->file_end = r->end;
        return;
    }
    if (r->path[0] == '[' && r->path[1] == 'v') return; /* [vdso], [vvar], [vsyscall] */
    /* Drop the region less the windows; a file's mapping (a memfd's
     * included) holds neither stack nor thread block: drop all of it. */
    uintptr_t cur = r->start;
    for (int w = r->path[0] == '/' ? 2 : 0; w <= 2 && cur < r->end; w++) {
        uintptr_t lo = w < 2 ? st->keep[w][0] : r->end, hi = w < 2 ? st->keep[w][1] : r->end;
        if (hi <= cur) continue;
        uintptr_t stop = lo < r->end ? lo : r->end;
        if (stop > cur) {
            if (st->count == DROP_BATCH) {
                st->full = true;
                return;
            }
            st->drop[st->count][0] = cur;
            st->drop[st->count][1] = stop;
            st->count++;
        }
        cur = hi;
    }
}

CHILD_CODE static void window(uintptr_t out[2], uintptr_t at, uintptr_t below, uintptr_t above) {
    uintptr_t base = at & ~(WINDOW_ALIGN - 1);
    out[0] = base > below ? base - below : 0;
    out[1] = base + WINDOW_ALIGN + above;
}

/* Read /proc/self/maps once, visiting each region. False if it could not be
 * read or a line did not parse. */
CHILD_CODE static bool drop_scan(drop_state *st) {
    long fd = SC4(SYS_openat, AT_FDCWD, "/proc/self/maps", O_RDONLY | O_CLOEXEC, 0);
    if (fd < 0) return false;
    char chunk[1024], line[128];
    size_t len = 0;
    bool ok = true;
    st->count = 0;
    st->full = false;
    st->file_end = 0;
    for (;;) {
        long n = SC3(SYS_read, fd, chunk, sizeof chunk);
        if (n == -EINTR) continue;
        if (n <= 0) {
            ok = n == 0 && len == 0;
            break;
        }
        for (long i = 0; i < n; i++) {
            if (chunk[i] != '\n') {
                if (len < sizeof line) line[len++] = chunk[i]; /* the fields come first */
                continue;
            }
            region r;
            if (parse_region(line, len, &r)) drop_visit(st, &r);
            else ok = false;
            len = 0;
        }
    }
    SC1(SYS_close, fd);
    return ok;
}

CHILD_CODE static void drop_mappings(void) {
    volatile char here = 0;
    drop_state st;
    st.code = (uintptr_t)&drop_mappings;
    /* The tracker's frames lie within a few KiB of this one; glibc's thread
     * block within a few KiB of the thread pointer, above it on x86-64 and
     * below it on arm64. */
    uintptr_t w[2][2];
    window(w[0], (uintptr_t)&here, WINDOW_ALIGN, WINDOW_ALIGN);
    window(w[1], thread_pointer(), WINDOW_ALIGN, WINDOW_ALIGN);
    int lo = w[0][0] <= w[1][0] ? 0 : 1;
    st.keep[0][0] = w[lo][0];
    st.keep[0][1] = w[lo][1];
    st.keep[1][0] = w[1 - lo][0];
    st.keep[1][1] = w[1 - lo][1];
    if (st.keep[1][0] < st.keep[0][1]) { /* overlapping: one window */
        if (st.keep[1][1] > st.keep[0][1]) st.keep[0][1] = st.keep[1][1];
        st.keep[1][0] = st.keep[1][1] = st.keep[0][1];
    }
    st.ino = 0;
    st.pass = 1;
    if (!drop_scan(&st) || st.ino == 0) return;
    st.pass = 2;
    /* Collect a batch, unmap it, look again: the list is never changed
     * while it is being read. */
    for (int round = 0; round < 256; round++) {
        if (!drop_scan(&st)) return;
        for (int i = 0; i < st.count; i++) SC2(SYS_munmap, st.drop[i][0], st.drop[i][1] - st.drop[i][0]);
        if (!st.full) return;
    }
}
#else
CHILD_CODE static void drop_mappings(void) {}
#endif

CHILD_CODE static _Noreturn void tracker_main(int sock) {
    uint64_t all = ~(uint64_t)0; /* the kernel's sigset: 64 bits */
    SC4(SYS_rt_sigprocmask, SIG_SETMASK, &all, 0, sizeof all);
    SC0(SYS_setsid);
    SC1(SYS_chdir, "/");
    close_all_but(sock);
    drop_mappings();
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
