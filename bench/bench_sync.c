/* bench_sync: crew's locks and semaphores against the POSIX primitives they
 * replace, measured in the same run on the same machine.
 *
 * Every figure is printed as crew's number, the baseline's number and their
 * ratio; speed is measured, never asserted. Each figure is the best of several
 * repetitions, with crew and baseline runs interleaved (and their order
 * alternated) so that both see the same background noise. Only a wrong result
 * (a lost increment, a failed call) makes the program exit nonzero.
 *
 * Figures:
 *   lock uncontended   one thread, acquire + release in a loop: ns per pair;
 *                      measured before the process has started any thread
 *                      (glibc then skips atomics) and after (the figure that
 *                      counts)
 *   lock contended     two threads each add 1 to a shared counter under the
 *                      lock N times: lock operations per second, both threads
 *   sem ping-pong      two semaphores passed back and forth between two
 *                      threads, then between two processes (CREW_SHARED
 *                      objects / pshared sem_t in a MAP_SHARED mapping):
 *                      ns per round trip
 *
 * Threads are plain pthreads in both crew and baseline runs, so the primitive
 * is the only thing that differs. In the two-party figures each party is
 * pinned to its own CPU (the first two of the affinity mask): unpinned, the
 * scheduler sometimes puts both on one CPU, the lock is then never contended
 * and the "best" run measures no contention at all. A watchdog alarm ends
 * the run if a primitive hangs.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <semaphore.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <crew.h>

#ifndef CREW_BENCH_BUILD_TYPE
#define CREW_BENCH_BUILD_TYPE "unknown"
#endif

#define WATCHDOG_S 300

typedef struct config {
    long uncontended_iters; /* acquire+release pairs per run */
    long contended_iters;   /* increments per thread per run */
    long pingpong_iters;    /* round trips per run */
    int reps;               /* runs per lock figure; the best one counts */
    int pingpong_reps;      /* runs per ping-pong figure (they sleep in the
                               kernel, so each run is slower) */
} config;

static const config full_config = {20000000, 2000000, 20000, 5, 3};
static const config quick_config = {2000000, 200000, 2000, 3, 3};

static int failures;

static void fail(const char *what, int code) {
    fprintf(stderr, "bench_sync: %s failed: %d (%s)\n", what, code,
            code < 0 ? crew_strerror(code) : strerror(code));
    failures++;
}

static void fail_count(const char *what, long got, long want) {
    fprintf(stderr, "bench_sync: %s: counter is %ld, expected %ld (lost or doubled updates)\n", what,
            got, want);
    failures++;
}

static double now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/* ------------------------------------------------------------- pinning */

static cpu_set_t original_mask;  /* the main thread's mask at start */
static int pin_cpus[2];          /* the CPUs the two parties run on */
static bool pinning;             /* false with fewer than two CPUs */

static void pinning_init(void) {
    if (sched_getaffinity(0, sizeof original_mask, &original_mask) != 0)
        return;
    int found = 0;
    for (int cpu = 0; cpu < CPU_SETSIZE && found < 2; cpu++)
        if (CPU_ISSET(cpu, &original_mask))
            pin_cpus[found++] = cpu;
    pinning = found == 2;
}

/* Pin the calling thread to party `who`'s CPU (0 or 1). */
static void pin_self(int who) {
    if (!pinning)
        return;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(pin_cpus[who], &set);
    (void)sched_setaffinity(0, sizeof set, &set);
}

static void unpin_self(void) {
    if (pinning)
        (void)sched_setaffinity(0, sizeof original_mask, &original_mask);
}

static void on_alarm(int sig) {
    (void)sig;
    static const char msg[] = "bench_sync: watchdog: a run took too long (a primitive hangs?)\n";
    ssize_t w = write(2, msg, sizeof msg - 1);
    (void)w;
    _exit(3);
}

/* ------------------------------------------------------ lock uncontended */

/* The shared counter the lock protects. Lock calls are opaque to the
 * compiler, so every increment is a real load and store. */
static long counter;

static double uncontended_crew(long n) {
    crew_lock lock;
    int rc = crew_lock_init(&lock, 0);
    if (rc != 0) {
        fail("crew_lock_init", rc);
        return 0;
    }
    counter = 0;
    double t0 = now_ns();
    for (long i = 0; i < n; i++) {
        rc |= crew_lock_acquire(&lock, CREW_FOREVER);
        counter++;
        rc |= crew_lock_release(&lock);
    }
    double t1 = now_ns();
    if (rc != 0)
        fail("crew_lock_acquire/release", rc);
    if (counter != n)
        fail_count("uncontended crew_lock", counter, n);
    crew_lock_destroy(&lock);
    return (t1 - t0) / (double)n;
}

static double uncontended_pthread(long n) {
    pthread_mutex_t m;
    pthread_mutex_init(&m, NULL);
    int rc = 0;
    counter = 0;
    double t0 = now_ns();
    for (long i = 0; i < n; i++) {
        rc |= pthread_mutex_lock(&m);
        counter++;
        rc |= pthread_mutex_unlock(&m);
    }
    double t1 = now_ns();
    if (rc != 0)
        fail("pthread_mutex_lock/unlock", rc);
    if (counter != n)
        fail_count("uncontended pthread_mutex", counter, n);
    pthread_mutex_destroy(&m);
    return (t1 - t0) / (double)n;
}

/* -------------------------------------------------------- lock contended */

typedef struct contended {
    crew_lock crew;
    pthread_mutex_t mutex;
    bool use_crew;
    long iters;
    long count;               /* under crew or mutex */
    _Atomic int ready;        /* workers that reached the start line */
    _Atomic int go;           /* set by main once both are there */
    _Atomic int errors;
} contended;

static void *contended_worker(void *arg) {
    contended *c = arg;
    pin_self(atomic_fetch_add(&c->ready, 1) & 1);
    while (!atomic_load(&c->go))
        sched_yield();
    int rc = 0;
    if (c->use_crew) {
        for (long i = 0; i < c->iters; i++) {
            rc |= crew_lock_acquire(&c->crew, CREW_FOREVER);
            c->count++;
            rc |= crew_lock_release(&c->crew);
        }
    } else {
        for (long i = 0; i < c->iters; i++) {
            rc |= pthread_mutex_lock(&c->mutex);
            c->count++;
            rc |= pthread_mutex_unlock(&c->mutex);
        }
    }
    if (rc != 0)
        atomic_fetch_add(&c->errors, 1);
    return NULL;
}

/* Lock operations (acquire+release pairs) per second over both threads. */
static double contended_run(bool use_crew, long n) {
    static contended c;
    memset(&c, 0, sizeof c);
    c.use_crew = use_crew;
    c.iters = n;
    int rc = crew_lock_init(&c.crew, 0);
    if (rc != 0) {
        fail("crew_lock_init", rc);
        return 0;
    }
    pthread_mutex_init(&c.mutex, NULL);

    pthread_t t[2];
    int started = 0;
    for (; started < 2; started++) {
        rc = pthread_create(&t[started], NULL, contended_worker, &c);
        if (rc != 0) {
            fail("pthread_create", rc);
            break;
        }
    }
    while (atomic_load(&c.ready) < started)
        sched_yield();
    double t0 = now_ns();
    atomic_store(&c.go, 1);
    for (int i = 0; i < started; i++)
        pthread_join(t[i], NULL);
    double t1 = now_ns();

    if (atomic_load(&c.errors) != 0)
        fail(use_crew ? "contended crew_lock" : "contended pthread_mutex", -EPROTO);
    if (c.count != (long)started * n)
        fail_count(use_crew ? "contended crew_lock" : "contended pthread_mutex", c.count,
                   (long)started * n);
    crew_lock_destroy(&c.crew);
    pthread_mutex_destroy(&c.mutex);
    return (double)started * (double)n / ((t1 - t0) / 1e9);
}

/* --------------------------------------------------------- sem ping-pong */

/* Two semaphores, "ping" (main -> partner) and "pong" (partner -> main), in a
 * MAP_SHARED mapping so the same struct serves threads and processes. */
typedef struct pingpong {
    crew_sem ping, pong;
    sem_t pping, ppong;
    bool use_crew;
    long iters;               /* round trips the partner serves */
} pingpong;

#define PINGPONG_WARMUP 1000

static int partner_loop(pingpong *p) {
    pin_self(1);
    int rc = 0;
    if (p->use_crew) {
        for (long i = 0; i < p->iters && rc == 0; i++) {
            rc = crew_sem_acquire(&p->ping, CREW_FOREVER);
            if (rc == 0)
                rc = crew_sem_release(&p->pong, 1);
        }
    } else {
        for (long i = 0; i < p->iters && rc == 0; i++) {
            rc = sem_wait(&p->pping) != 0 ? -errno : 0;
            if (rc == 0)
                rc = sem_post(&p->ppong) != 0 ? -errno : 0;
        }
    }
    return rc;
}

static void *partner_thread(void *arg) {
    return (void *)(intptr_t)partner_loop(arg);
}

/* Main's side: `n` timed round trips after a short warm-up. */
static double main_loop(pingpong *p, long n) {
    int rc = 0;
    double t0 = 0;
    for (long i = 0; i < PINGPONG_WARMUP + n && rc == 0; i++) {
        if (i == PINGPONG_WARMUP)
            t0 = now_ns();
        if (p->use_crew) {
            rc = crew_sem_release(&p->ping, 1);
            if (rc == 0)
                rc = crew_sem_acquire(&p->pong, CREW_FOREVER);
        } else {
            rc = sem_post(&p->pping) != 0 ? -errno : 0;
            if (rc == 0)
                rc = sem_wait(&p->ppong) != 0 ? -errno : 0;
        }
    }
    double t1 = now_ns();
    if (rc != 0) {
        fail(p->use_crew ? "ping-pong crew_sem" : "ping-pong sem_t", rc);
        return 0;
    }
    return (t1 - t0) / (double)n;
}

/* ns per round trip, partner in a thread or (processes) in a forked child. */
static double pingpong_run(pingpong *p, bool use_crew, bool processes, long n) {
    unsigned flags = processes ? CREW_SHARED : 0;
    memset(p, 0, sizeof *p);
    p->use_crew = use_crew;
    p->iters = PINGPONG_WARMUP + n;
    int rc = crew_sem_init(&p->ping, 0, flags);
    if (rc == 0)
        rc = crew_sem_init(&p->pong, 0, flags);
    if (rc != 0) {
        fail("crew_sem_init", rc);
        return 0;
    }
    if (sem_init(&p->pping, processes, 0) != 0 || sem_init(&p->ppong, processes, 0) != 0) {
        fail("sem_init", -errno);
        return 0;
    }

    double ns = 0;
    pin_self(0);
    if (processes) {
        fflush(NULL);
        pid_t pid = fork();
        if (pid < 0) {
            fail("fork", -errno);
            return 0;
        }
        if (pid == 0) {
            alarm(WATCHDOG_S);
            _exit(partner_loop(p) == 0 ? 0 : 1);
        }
        ns = main_loop(p, n);
        if (ns == 0)
            kill(pid, SIGKILL);
        int status;
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
        }
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
            fail("ping-pong child", -ECHILD);
    } else {
        pthread_t t;
        rc = pthread_create(&t, NULL, partner_thread, p);
        if (rc != 0) {
            fail("pthread_create", rc);
            return 0;
        }
        ns = main_loop(p, n);
        if (ns == 0) {
            /* Unblock the partner so it can be joined. */
            crew_sem_release(&p->ping, (unsigned)p->iters);
            for (long i = 0; i < p->iters; i++)
                sem_post(&p->pping);
        }
        void *res;
        pthread_join(t, &res);
        if (ns != 0 && (intptr_t)res != 0)
            fail("ping-pong partner", (int)(intptr_t)res);
    }
    unpin_self();
    crew_sem_destroy(&p->ping);
    crew_sem_destroy(&p->pong);
    sem_destroy(&p->pping);
    sem_destroy(&p->ppong);
    return ns;
}

/* ---------------------------------------------------------------- driver */

static double min2(double a, double b) { return a < b ? a : b; }
static double max2(double a, double b) { return a > b ? a : b; }

static void bench_uncontended(const config *cf, const char *label) {
    double crew = 1e300, base = 1e300;
    for (int r = 0; r < cf->reps; r++) {
        if (r % 2 == 0) {
            crew = min2(crew, uncontended_crew(cf->uncontended_iters));
            base = min2(base, uncontended_pthread(cf->uncontended_iters));
        } else {
            base = min2(base, uncontended_pthread(cf->uncontended_iters));
            crew = min2(crew, uncontended_crew(cf->uncontended_iters));
        }
    }
    printf("lock uncontended, %s: crew %.1f ns/op, pthread_mutex %.1f ns/op, ratio %.2fx "
           "(target <= 1.0x)\n",
           label, crew, base, crew / base);
    fflush(stdout);
}

static void bench_contended(const config *cf) {
    double crew = 0, base = 0;
    for (int r = 0; r < cf->reps; r++) {
        if (r % 2 == 0) {
            crew = max2(crew, contended_run(true, cf->contended_iters));
            base = max2(base, contended_run(false, cf->contended_iters));
        } else {
            base = max2(base, contended_run(false, cf->contended_iters));
            crew = max2(crew, contended_run(true, cf->contended_iters));
        }
    }
    printf("lock contended, 2 threads: crew %.2f Mops/s, pthread_mutex %.2f Mops/s, "
           "throughput ratio %.2fx (target >= 1.0x)\n",
           crew / 1e6, base / 1e6, base > 0 ? crew / base : 0);
    fflush(stdout);
}

static void bench_pingpong(const config *cf, bool processes) {
    pingpong *p = mmap(NULL, sizeof *p, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        fail("mmap", -errno);
        return;
    }
    double crew = 1e300, base = 1e300;
    for (int r = 0; r < cf->pingpong_reps; r++) {
        if (r % 2 == 0) {
            crew = min2(crew, pingpong_run(p, true, processes, cf->pingpong_iters));
            base = min2(base, pingpong_run(p, false, processes, cf->pingpong_iters));
        } else {
            base = min2(base, pingpong_run(p, false, processes, cf->pingpong_iters));
            crew = min2(crew, pingpong_run(p, true, processes, cf->pingpong_iters));
        }
    }
    munmap(p, sizeof *p);
    if (processes)
        printf("sem ping-pong, 2 processes: crew_sem (CREW_SHARED) %.0f ns/round trip, "
               "sem_t (pshared) %.0f ns/round trip, ratio %.2fx (< 1 = crew faster)\n",
               crew, base, crew / base);
    else
        printf("sem ping-pong, 2 threads: crew_sem %.0f ns/round trip, sem_t %.0f ns/round trip, "
               "ratio %.2fx (< 1 = crew faster)\n",
               crew, base, crew / base);
    fflush(stdout);
}

static void *nothing(void *arg) { return arg; }

static void usage(FILE *to) {
    fprintf(to,
            "usage: bench_sync [--quick]\n"
            "  --quick   a short run (a few seconds) with fewer iterations\n"
            "Prints crew's figure, the POSIX baseline's and their ratio for each\n"
            "primitive; see bench/README.md.\n");
}

int main(int argc, char **argv) {
    const config *cf = &full_config;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0) {
            cf = &quick_config;
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "bench_sync: unknown argument '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    signal(SIGALRM, on_alarm);
    alarm(WATCHDOG_S);

    pinning_init();
    int cpus = crew_cpu_count();
    printf("bench_sync: crew %s, %d cpu(s), build type %s, %s run, best of %d (ping-pong %d)\n",
           crew_version(), cpus, CREW_BENCH_BUILD_TYPE, cf == &quick_config ? "quick" : "full",
           cf->reps, cf->pingpong_reps);
    if (strcmp(CREW_BENCH_BUILD_TYPE, "Debug") == 0)
        printf("note: a Debug build; figures mean little without optimisation\n");
    if (pinning)
        printf("two-party figures: one party pinned to cpu %d, the other to cpu %d\n", pin_cpus[0],
               pin_cpus[1]);
    else
        printf("note: fewer than 2 cpus; contended and ping-pong figures measure the scheduler\n");
    fflush(stdout);

    /* glibc's mutex skips atomic instructions while the process has only
     * ever had one thread, so the uncontended figure is taken twice: before
     * any thread exists, and after one has (the state every threaded program
     * is in, and the one that counts). */
    bench_uncontended(cf, "single-threaded process");
    pthread_t t;
    int rc = pthread_create(&t, NULL, nothing, NULL);
    if (rc != 0)
        fail("pthread_create", rc);
    else
        pthread_join(t, NULL);
    bench_uncontended(cf, "threaded process");
    bench_contended(cf);
    bench_pingpong(cf, false);
    bench_pingpong(cf, true);

    if (failures != 0) {
        fprintf(stderr, "bench_sync: %d failure(s); figures above are not valid\n", failures);
        return 1;
    }
    return 0;
}
