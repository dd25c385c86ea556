/* crew processes.
 *
 * Who forks. Every child is forked by one long-lived helper thread of the
 * parent, the forker, not by the thread that calls crew_process_start. The
 * reason is PR_SET_PDEATHSIG, which makes children die with their parent: the
 * kernel fires it when the *thread* that forked the child exits, not when the
 * process does. Forking from the caller would kill a child as soon as the
 * thread that started it returned (a pool's helper, a crew thread that starts
 * workers and finishes), which is far worse than the alternatives. The
 * forker lives as long as this process has unreaped children: when idle for
 * FORKER_IDLE seconds it reaps those that have ended and leaves if none is
 * left (so a process whose main thread called pthread_exit can still end).
 * The signal thus fires only when the process itself dies, or execs. The price: fn runs on a copy of the forker thread,
 * not of the caller. The forker blocks every signal and holds no lock when it
 * forks; the child gets the caller's signal mask back, and the main thread's
 * name (comm), so ps shows the program's name. Thread-local variables in the
 * child have the values of a thread that never ran user code, and locks the
 * caller held at the call are held there by a thread that does not exist,
 * like those of every other thread (see docs/process.md).
 *
 * Callers hand a request (on their stack) to the forker under forker_mu and
 * wait on forker_done; the forker forks, opens a pidfd for the child, lists
 * it, and marks the request done.
 *
 * Reaping. A record (struct crew_process) is shared by the handles (one per
 * crew_process_start, one per pointer crew_process_children hands out) and
 * the children list; `refs` counts them. The child is reaped exactly once,
 * under the record's mutex, by whichever call first finds it ended
 * (waitid(P_PIDFD, WNOHANG)); the same mutex covers every signal sent to it,
 * so a signal is never sent after the reap. Joiners wait in ppoll on the
 * pidfd (readable once the child has ended) without any lock, then reap.
 * A reaped child leaves the list. Without pidfds (ENOSYS: Linux < 5.3, or
 * pidfd_open failing, say at the fd limit) the same code uses the pid, which
 * is safe as long as only crew reaps its children, and joiners poll with
 * WNOHANG, sleeping 1 ms doubling up to 20 ms between polls.
 *
 * Lock order: forker_mu, then list_mu, then a record's mu. Code holding a
 * record's mu takes no other lock. Around fork() every one of them is held
 * (atfork prepare), so the child inherits a consistent list; the child
 * empties it (the parent's children are not its own) and starts without a
 * forker.
 *
 * At exit (an atexit handler registered by a constructor, so that it runs
 * after the handlers registered later: thread.c's joiner of non-daemon
 * threads, which may still start processes, and the program's own, as
 * Python joins threads before processes), daemon children get SIGTERM, then
 * SIGKILL after CREW_PROCESS_EXIT_GRACE, and are reaped; non-daemon children
 * are joined.
 */
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "crew/clock.h"
#include "crew/error.h"
#include "crew/process.h"
#include "deadline.h"
#include "pidfd.h"
#include "tid.h"

bool crew__pidfd_disabled;

/* Seconds the forker waits for work, with no child listed, before leaving. */
#define FORKER_IDLE 1.0
/* "1", "1:2": the child's place in the process tree, as Python's _identity. */
#define IDENTITY_MAX 48
/* Fallback polling: first and longest sleep between waitid polls. */
#define POLL_MIN_NS 1000000
#define POLL_MAX_NS 20000000

struct crew_process {
    _Atomic int refs;             /* handles + the children list's */
    /* Set before the record is published (start returns, list_mu). */
    pid_t pid;
    int pidfd;                    /* -1: pid-based fallback */
    pid_t owner;                  /* the process that started the child */
    bool daemon;
    char name[CREW_PROCESS_NAME_MAX];
    char identity[IDENTITY_MAX];

    pthread_mutex_t mu;           /* guards the next three; reaping and
                                     signalling are each done holding it */
    bool ended;                   /* reaped, by crew or behind its back */
    bool code_known;              /* false: someone else reaped it */
    int code;                     /* exit status, or -signal */

    crew_process *prev, *next;    /* children list; under list_mu */
    bool listed;                  /* under list_mu */
    bool exit_signalled;          /* at-exit SIGTERM sent; under list_mu */
};

/* The live children of this process, oldest first. Each listed record holds
 * a reference. */
static pthread_mutex_t list_mu = PTHREAD_MUTEX_INITIALIZER;
static crew_process *list_head, *list_tail; /* under list_mu */
static size_t list_count;                   /* under list_mu */

struct start_req {
    crew_process *p;
    crew_process_fn fn;
    void *arg;
    sigset_t mask;                /* the caller's, restored in the child */
    int rc;                       /* under forker_mu */
    bool done;                    /* under forker_mu */
    struct start_req *next;       /* under forker_mu */
};

static pthread_mutex_t forker_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_condattr_t mono_attr;         /* CLOCK_MONOTONIC */
static pthread_cond_t forker_wake;           /* a request came; forker waits */
static pthread_cond_t forker_done;           /* a request is done; callers wait */
static struct start_req *req_head, *req_tail; /* under forker_mu */
static bool forker_running;                  /* under forker_mu */
static char main_comm[16];                   /* under forker_mu; for children */

static atomic_uint name_counter;
/* This process's name and identity: written only in a new child before fn
 * runs (one thread), read-only afterwards. */
static char current_name[CREW_PROCESS_NAME_MAX] = "MainProcess";
static char current_identity[IDENTITY_MAX];

/* ------------------------------------------------------------ records */

static void process_unref(crew_process *p) {
    if (atomic_fetch_sub_explicit(&p->refs, 1, memory_order_acq_rel) != 1) return;
    if (p->pidfd >= 0) close(p->pidfd);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

static void unlink_locked(crew_process *p) {
    if (p->prev) p->prev->next = p->next;
    else list_head = p->next;
    if (p->next) p->next->prev = p->prev;
    else list_tail = p->prev;
    p->prev = p->next = NULL;
    p->listed = false;
    list_count--;
}

static void list_add(crew_process *p) {
    atomic_fetch_add_explicit(&p->refs, 1, memory_order_relaxed);
    pthread_mutex_lock(&list_mu);
    p->prev = list_tail;
    p->next = NULL;
    if (list_tail) list_tail->next = p;
    else list_head = p;
    list_tail = p;
    p->listed = true;
    list_count++;
    pthread_mutex_unlock(&list_mu);
}

/* Drop an ended child from the list (idempotent). */
static void unlist(crew_process *p) {
    pthread_mutex_lock(&list_mu);
    bool was = p->listed;
    if (was) unlink_locked(p);
    pthread_mutex_unlock(&list_mu);
    if (was) process_unref(p);
}

/* Reap p if it has ended, with p->mu held; returns whether it has. */
static bool reap_locked(crew_process *p) {
    if (p->ended) return true;
    siginfo_t info;
    int rc;
    do rc = crew__waitid(p->pidfd, p->pid, &info, WEXITED | WNOHANG);
    while (rc == -EINTR);
    if (rc == -EINVAL && p->pidfd >= 0) {
        /* Linux 5.3 has pidfds but not P_PIDFD: we alone reap, so the pid is
         * still this child's. */
        do rc = crew__waitid(-1, p->pid, &info, WEXITED | WNOHANG);
        while (rc == -EINTR);
    }
    if (rc == 0 && info.si_pid == 0) return false;
    p->ended = true;
    /* Anything but a status (ECHILD: reaped behind crew's back) leaves the
     * code unknown. */
    p->code_known = rc == 0;
    if (rc == 0) p->code = info.si_code == CLD_EXITED ? info.si_status : -info.si_status;
    return true;
}

/* Whether the child has ended, reaping it if it has. */
static bool poll_ended(crew_process *p) {
    pthread_mutex_lock(&p->mu);
    bool ended = reap_locked(p);
    pthread_mutex_unlock(&p->mu);
    if (ended) unlist(p);
    return ended;
}

/* Sleep until the child may have ended or the deadline passes. */
static void wait_change(crew_process *p, const crew__deadline *d, int64_t *backoff_ns) {
    struct timespec rel, *relp = NULL;
    int64_t left = crew__deadline_forever(d) ? INT64_MAX : d->ns - crew__now_ns();
    if (left <= 0) return;
    if (p->pidfd >= 0) {
        if (left != INT64_MAX) {
            rel = (struct timespec){.tv_sec = (time_t)(left / 1000000000), .tv_nsec = (long)(left % 1000000000)};
            relp = &rel;
        }
        struct pollfd pfd = {.fd = p->pidfd, .events = POLLIN};
        ppoll(&pfd, 1, relp, NULL); /* EINTR and timeouts: the caller re-checks */
        return;
    }
    int64_t ns = *backoff_ns < left ? *backoff_ns : left;
    rel = (struct timespec){.tv_sec = (time_t)(ns / 1000000000), .tv_nsec = (long)(ns % 1000000000)};
    nanosleep(&rel, NULL);
    if (*backoff_ns < POLL_MAX_NS) *backoff_ns *= 2;
}

static int send_signal(crew_process *p, int sig) {
    if (p == NULL) return CREW_EINVAL;
    if (p->owner != crew__pid()) return CREW_ECHILD;
    int rc = 0;
    pthread_mutex_lock(&p->mu);
    bool ended = reap_locked(p);
    if (!ended) {
        /* Not reaped, and it cannot be while we hold mu: the pid (fallback)
         * is still this child's. */
        rc = p->pidfd >= 0 ? crew__pidfd_send_signal(p->pidfd, sig) : (kill(p->pid, sig) == 0 ? 0 : -errno);
        if (rc == -ESRCH) rc = 0; /* reaped behind our back: nothing to signal */
    }
    pthread_mutex_unlock(&p->mu);
    if (ended) unlist(p);
    return rc;
}

/* ------------------------------------------------------------ the forker */

static _Noreturn void child_main(crew_process *p, crew_process_fn fn, void *arg, const sigset_t *mask,
                                 pid_t parent, const char *comm) {
    /* The atfork child handler has run: the list is empty, no forker. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) { /* the parent died before the line above */
        kill(getpid(), SIGKILL);
        _exit(1);
    }
    if (comm[0]) prctl(PR_SET_NAME, comm);
    snprintf(current_name, sizeof current_name, "%s", p->name);
    snprintf(current_identity, sizeof current_identity, "%s", p->identity);
    atomic_store(&name_counter, 0);
    pthread_sigmask(SIG_SETMASK, mask, NULL);
    int rc = fn(arg);
    fflush(NULL); /* Python flushes sys.stdout/stderr at a child's exit */
    _exit(rc >= 0 && rc <= 255 ? rc : 1);
}

static int fork_child(struct start_req *r, const char *comm) {
    crew_process *p = r->p;
    crew_process_fn fn = r->fn;
    void *arg = r->arg;
    sigset_t mask = r->mask;
    pid_t parent = getpid();
    fflush(NULL); /* or the child would write the parent's buffered output again */
    pid_t pid = fork();
    if (pid == 0) child_main(p, fn, arg, &mask, parent, comm);
    if (pid < 0) return errno == ENOMEM ? CREW_ENOMEM : CREW_EAGAIN;
    p->pid = pid;
    int fd = crew__pidfd_open(pid);
    p->pidfd = fd >= 0 ? fd : -1;
    list_add(p);
    return 0;
}

static void *forker_main(void *unused) {
    (void)unused;
    pthread_mutex_lock(&forker_mu);
    char comm[sizeof main_comm];
    memcpy(comm, main_comm, sizeof comm);
    for (;;) {
        while (req_head == NULL) {
            crew__deadline d;
            crew__deadline_init(&d, FORKER_IDLE);
            struct timespec ts = crew__deadline_ts(&d);
            int rc = pthread_cond_timedwait(&forker_wake, &forker_mu, &ts);
            /* Leaving with a child listed would fire its PDEATHSIG. Reap
             * the ended ones (as Python's start() does) so that a process
             * nobody joins in still lets the forker go. */
            if (rc == ETIMEDOUT && req_head == NULL && crew_process_children(NULL, 0) == 0) {
                forker_running = false;
                pthread_mutex_unlock(&forker_mu);
                return NULL;
            }
        }
        struct start_req *r = req_head;
        req_head = r->next;
        if (req_head == NULL) req_tail = NULL;
        pthread_mutex_unlock(&forker_mu);
        int rc = fork_child(r, comm);
        pthread_mutex_lock(&forker_mu);
        r->rc = rc;
        r->done = true;
        pthread_cond_broadcast(&forker_done);
    }
}

/* With forker_mu held. The forker blocks every signal, so it never runs a
 * handler meant for the program's threads. */
static int forker_spawn_locked(void) {
    int fd = open("/proc/self/comm", O_RDONLY | O_CLOEXEC);
    main_comm[0] = '\0';
    if (fd >= 0) {
        ssize_t n = read(fd, main_comm, sizeof main_comm - 1);
        close(fd);
        if (n > 0 && main_comm[n - 1] == '\n') n--;
        main_comm[n > 0 ? n : 0] = '\0';
    }
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_attr_t attr;
    int rc = pthread_attr_init(&attr);
    if (rc == 0) {
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        pthread_t t;
        rc = pthread_create(&t, &attr, forker_main, NULL);
        pthread_attr_destroy(&attr);
        if (rc == 0) pthread_setname_np(t, "crew-forker");
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) return rc == ENOMEM ? CREW_ENOMEM : CREW_EAGAIN;
    forker_running = true;
    return 0;
}

/* ------------------------------------------------------ fork and exit */

static void atfork_prepare(void) {
    pthread_mutex_lock(&forker_mu);
    pthread_mutex_lock(&list_mu);
    for (crew_process *p = list_head; p; p = p->next) pthread_mutex_lock(&p->mu);
}

static void atfork_parent(void) {
    for (crew_process *p = list_head; p; p = p->next) pthread_mutex_unlock(&p->mu);
    pthread_mutex_unlock(&list_mu);
    pthread_mutex_unlock(&forker_mu);
}

static void atfork_child(void) {
    crew_process *p = list_head;
    list_head = list_tail = NULL;
    list_count = 0;
    while (p) {
        crew_process *next = p->next;
        pthread_mutex_unlock(&p->mu);
        p->prev = p->next = NULL;
        p->listed = false;
        process_unref(p);
        p = next;
    }
    req_head = req_tail = NULL;
    forker_running = false;
    /* Their waiters were threads that do not exist here. */
    pthread_cond_init(&forker_wake, &mono_attr);
    pthread_cond_init(&forker_done, NULL);
    pthread_mutex_unlock(&list_mu);
    pthread_mutex_unlock(&forker_mu);
}

/* The first listed child matching `daemon` (and, if `unsignalled`, not yet
 * sent the at-exit SIGTERM, which it then counts as sent), with a reference;
 * NULL if none. */
static crew_process *take_listed(bool daemon, bool unsignalled) {
    pthread_mutex_lock(&list_mu);
    crew_process *p = list_head;
    while (p && (p->daemon != daemon || (unsignalled && p->exit_signalled))) p = p->next;
    if (p) {
        if (unsignalled) p->exit_signalled = true;
        atomic_fetch_add_explicit(&p->refs, 1, memory_order_relaxed);
    }
    pthread_mutex_unlock(&list_mu);
    return p;
}

/* Python's _exit_function: terminate the daemon children, join the rest. */
static void exit_handler(void) {
    for (;;) {
        pthread_mutex_lock(&list_mu);
        bool any = list_count > 0;
        pthread_mutex_unlock(&list_mu);
        if (!any) return;
        crew_process *p;
        while ((p = take_listed(true, true)) != NULL) {
            send_signal(p, SIGTERM);
            process_unref(p);
        }
        crew__deadline grace;
        crew__deadline_init(&grace, CREW_PROCESS_EXIT_GRACE);
        while ((p = take_listed(true, false)) != NULL) {
            double left = (double)(grace.ns - crew__now_ns()) / 1e9;
            if (crew_process_join(p, left > 0 ? left : 0) != 0) {
                send_signal(p, SIGKILL);
                crew_process_join(p, CREW_FOREVER);
            }
            unlist(p); /* ended by now; guarantees progress regardless */
            process_unref(p);
        }
        while ((p = take_listed(false, false)) != NULL) {
            crew_process_join(p, CREW_FOREVER);
            unlist(p);
            process_unref(p);
        }
    }
}

__attribute__((constructor)) static void process_setup(void) {
    pthread_condattr_init(&mono_attr);
    pthread_condattr_setclock(&mono_attr, CLOCK_MONOTONIC);
    pthread_cond_init(&forker_wake, &mono_attr);
    pthread_cond_init(&forker_done, NULL);
    pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
    atexit(exit_handler);
}

/* ------------------------------------------------------------ public */

int crew_process_start(crew_process **out, crew_process_fn fn, void *arg, const crew_process_options *opts) {
    static const crew_process_options defaults = {0};
    if (out == NULL || fn == NULL) return CREW_EINVAL;
    if (opts == NULL) opts = &defaults;
    crew_process *p = calloc(1, sizeof *p);
    if (p == NULL) return CREW_ENOMEM;
    if (pthread_mutex_init(&p->mu, NULL) != 0) {
        free(p);
        return CREW_ENOMEM;
    }
    atomic_init(&p->refs, 1);
    p->pidfd = -1;
    p->owner = crew__pid();
    p->daemon = opts->daemon;
    unsigned n = atomic_fetch_add(&name_counter, 1) + 1;
    /* Nesting deeper than IDENTITY_MAX allows keeps the deepest levels' ids
     * out of default names (as a truncated name). */
    char id[IDENTITY_MAX + 16];
    if (current_identity[0]) snprintf(id, sizeof id, "%s:%u", current_identity, n);
    else snprintf(id, sizeof id, "%u", n);
    memcpy(p->identity, id, sizeof p->identity - 1);
    if (opts->name) snprintf(p->name, sizeof p->name, "%s", opts->name);
    else snprintf(p->name, sizeof p->name, "Process-%s", p->identity);

    struct start_req r = {.p = p, .fn = fn, .arg = arg};
    pthread_sigmask(SIG_BLOCK, NULL, &r.mask);
    pthread_mutex_lock(&forker_mu);
    int rc = forker_running ? 0 : forker_spawn_locked();
    if (rc == 0) {
        if (req_tail) req_tail->next = &r;
        else req_head = &r;
        req_tail = &r;
        pthread_cond_signal(&forker_wake);
        while (!r.done) pthread_cond_wait(&forker_done, &forker_mu);
        rc = r.rc;
    }
    pthread_mutex_unlock(&forker_mu);
    if (rc != 0) {
        process_unref(p);
        return rc;
    }
    *out = p;
    return 0;
}

int crew_process_join(crew_process *process, double timeout) {
    if (process == NULL) return CREW_EINVAL;
    crew__deadline d;
    if (crew__deadline_init(&d, timeout) != 0) return CREW_EINVAL;
    if (process->owner != crew__pid()) return CREW_ECHILD;
    int64_t backoff = POLL_MIN_NS;
    for (;;) {
        if (poll_ended(process)) return 0;
        if (d.is_try || crew__deadline_passed(&d)) return CREW_ETIMEDOUT;
        wait_change(process, &d, &backoff);
    }
}

bool crew_process_is_alive(const crew_process *process) {
    if (process == NULL || process->owner != crew__pid()) return false;
    return !poll_ended((crew_process *)process); /* the record itself is never const */
}

int crew_process_exitcode(const crew_process *process, int *code) {
    if (process == NULL || code == NULL) return CREW_EINVAL;
    if (process->owner != crew__pid()) return CREW_ECHILD;
    crew_process *p = (crew_process *)process;
    if (!poll_ended(p)) return CREW_EBUSY;
    pthread_mutex_lock(&p->mu);
    bool known = p->code_known;
    int c = p->code;
    pthread_mutex_unlock(&p->mu);
    if (!known) return CREW_ECHILD;
    *code = c;
    return 0;
}

int crew_process_terminate(crew_process *process) { return send_signal(process, SIGTERM); }

int crew_process_kill(crew_process *process) { return send_signal(process, SIGKILL); }

int crew_process_pid(const crew_process *process) { return process ? (int)process->pid : 0; }

const char *crew_process_name(const crew_process *process) { return process ? process->name : NULL; }

bool crew_process_daemon(const crew_process *process) { return process && process->daemon; }

int crew_process_sentinel(const crew_process *process) { return process ? process->pidfd : -1; }

void crew_process_free(crew_process *process) {
    if (process) process_unref(process);
}

size_t crew_process_children(crew_process **out, size_t max) {
    if (out == NULL) max = 0;
    size_t n = 0;
    pthread_mutex_lock(&list_mu);
    crew_process *p = list_head;
    while (p) {
        crew_process *next = p->next;
        pthread_mutex_lock(&p->mu);
        bool ended = reap_locked(p);
        pthread_mutex_unlock(&p->mu);
        if (ended) {
            unlink_locked(p);
            process_unref(p);
        } else {
            if (n < max) {
                atomic_fetch_add_explicit(&p->refs, 1, memory_order_relaxed);
                out[n] = p;
            }
            n++;
        }
        p = next;
    }
    pthread_mutex_unlock(&list_mu);
    return n;
}

const char *crew_process_current_name(void) { return current_name; }
