/* bench_conn: crew connections moving messages between two processes,
 * against the same transfer done by hand in C and by Python's
 * multiprocessing.Pipe, all measured in the same run on the same machine.
 *
 * Figures, for 64-byte and 1 MiB messages: messages per second and MB/s
 * (10^6 bytes of payload per second) from a parent to a forked child over
 *   crew        crew_conn_pair, crew_conn_send / crew_conn_recv
 *   naive C     a socketpair, writev of an 8-byte length and the payload;
 *               the reader reads the length, then the payload (what one
 *               writes without a library)
 *   python      multiprocessing.Pipe, send_bytes / recv_bytes, run by
 *               bench/baselines/python/pipe_throughput.py (skipped, with a
 *               note, if python3 is missing)
 * Each run times from the first send to the child's reply that it has
 * received every byte (and how many), after the child has said it is ready.
 * Crew and naive runs are interleaved, their order alternated, so both see
 * the same background noise; each figure is the best of several runs, shown
 * beside its baselines with the ratio (> 1: crew faster). Speed is never
 * asserted: only a wrong byte count or a failed call makes the exit status
 * nonzero. A watchdog alarm ends a run that hangs.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <crew.h>

#ifndef CREW_BENCH_BUILD_TYPE
#define CREW_BENCH_BUILD_TYPE "unknown"
#endif
#ifndef CREW_BENCH_PYDIR
#define CREW_BENCH_PYDIR "bench/baselines/python"
#endif

#define WATCHDOG_S 600
#define MIB ((size_t)1 << 20)

typedef struct workload {
    const char *name;
    size_t size;
    long count;      /* messages per crew / naive run */
    long py_count;   /* messages per Python run (it is much slower) */
} workload;

static const workload full_loads[] = {
    {"64 B", 64, 2000000, 200000},
    {"1 MiB", MIB, 4000, 1000},
};
static const workload quick_loads[] = {
    {"64 B", 64, 200000, 30000},
    {"1 MiB", MIB, 400, 200},
};

static int failures;

static void fail(const char *what, int code) {
    fprintf(stderr, "bench_conn: %s failed: %d (%s)\n", what, code, crew_strerror(code));
    failures++;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void on_alarm(int sig) {
    (void)sig;
    static const char msg[] = "bench_conn: watchdog: a run took too long (a transfer hangs?)\n";
    ssize_t w = write(2, msg, sizeof msg - 1);
    (void)w;
    _exit(3);
}

static int child_status(pid_t pid) {
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR)
            return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* ------------------------------------------------------------------ crew */

/* Seconds to move w->count messages, or 0 on failure. */
static double run_crew(const workload *w) {
    crew_conn *a, *b;
    int rc = crew_conn_pair(&a, &b, NULL);
    if (rc != 0) {
        fail("crew_conn_pair", rc);
        return 0;
    }
    unsigned char *buf = calloc(1, w->size);
    pid_t pid = buf != NULL ? fork() : -1;
    if (pid < 0) {
        fail(buf != NULL ? "fork" : "malloc", buf != NULL ? -errno : CREW_ENOMEM);
        crew_conn_close(a);
        crew_conn_close(b);
        free(buf);
        return 0;
    }
    if (pid == 0) {
        crew_conn_close(a);
        uint64_t total = 0;
        size_t len;
        if (crew_conn_send(b, "r", 1) != 0)
            _exit(1);
        for (long i = 0; i < w->count; i++) {
            if (crew_conn_recv(b, buf, w->size, &len, CREW_FOREVER) != 0)
                _exit(2);
            total += len;
        }
        if (crew_conn_send(b, &total, sizeof total) != 0)
            _exit(3);
        crew_conn_close(b);
        _exit(0);
    }
    crew_conn_close(b);
    double elapsed = 0;
    char ready;
    size_t len;
    uint64_t total = 0;
    if ((rc = crew_conn_recv(a, &ready, 1, &len, CREW_FOREVER)) != 0) {
        fail("crew_conn_recv (ready)", rc);
        goto out;
    }
    double t0 = now_s();
    for (long i = 0; i < w->count; i++) {
        if ((rc = crew_conn_send(a, buf, w->size)) != 0) {
            fail("crew_conn_send", rc);
            goto out;
        }
    }
    if ((rc = crew_conn_recv(a, &total, sizeof total, &len, CREW_FOREVER)) != 0) {
        fail("crew_conn_recv (total)", rc);
        goto out;
    }
    elapsed = now_s() - t0;
    if (total != (uint64_t)w->size * (uint64_t)w->count) {
        fprintf(stderr, "bench_conn: crew child got %llu bytes, expected %llu\n", (unsigned long long)total,
                (unsigned long long)w->size * (unsigned long long)w->count);
        failures++;
        elapsed = 0;
    }
out:
    crew_conn_close(a);
    if (child_status(pid) != 0 && elapsed != 0) {
        fprintf(stderr, "bench_conn: crew child failed\n");
        failures++;
        elapsed = 0;
    }
    free(buf);
    return elapsed;
}

/* --------------------------------------------------------------- naive C */

static bool read_full(int fd, void *p, size_t n) {
    char *c = p;
    while (n > 0) {
        ssize_t r = read(fd, c, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return false;
        c += r;
        n -= (size_t)r;
    }
    return true;
}

static bool write_msg(int fd, const void *p, uint64_t n) {
    struct iovec iov[2] = {{&n, sizeof n}, {(void *)p, n}};
    struct iovec *v = iov;
    int cnt = 2;
    size_t left = sizeof n + n;
    while (left > 0) {
        ssize_t r = writev(fd, v, cnt);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return false;
        left -= (size_t)r;
        while (r > 0) {
            if ((size_t)r < v->iov_len) {
                v->iov_base = (char *)v->iov_base + r;
                v->iov_len -= (size_t)r;
                r = 0;
            } else {
                r -= (ssize_t)v->iov_len;
                v++;
                cnt--;
            }
        }
    }
    return true;
}

static double run_naive(const workload *w) {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
        fail("socketpair", -errno);
        return 0;
    }
    unsigned char *buf = calloc(1, w->size);
    pid_t pid = buf != NULL ? fork() : -1;
    if (pid < 0) {
        fail(buf != NULL ? "fork" : "malloc", buf != NULL ? -errno : CREW_ENOMEM);
        close(sv[0]);
        close(sv[1]);
        free(buf);
        return 0;
    }
    if (pid == 0) {
        close(sv[0]);
        uint64_t total = 0, len;
        if (!write_msg(sv[1], "r", 1))
            _exit(1);
        for (long i = 0; i < w->count; i++) {
            if (!read_full(sv[1], &len, sizeof len) || len > w->size || !read_full(sv[1], buf, len))
                _exit(2);
            total += len;
        }
        if (!write_msg(sv[1], &total, sizeof total))
            _exit(3);
        _exit(0);
    }
    close(sv[1]);
    double elapsed = 0;
    uint64_t len, total = 0;
    char ready;
    if (!read_full(sv[0], &len, sizeof len) || len != 1 || !read_full(sv[0], &ready, 1)) {
        fail("naive read (ready)", -EPROTO);
        goto out;
    }
    double t0 = now_s();
    for (long i = 0; i < w->count; i++) {
        if (!write_msg(sv[0], buf, w->size)) {
            fail("naive writev", -errno);
            goto out;
        }
    }
    if (!read_full(sv[0], &len, sizeof len) || len != sizeof total || !read_full(sv[0], &total, sizeof total)) {
        fail("naive read (total)", -EPROTO);
        goto out;
    }
    elapsed = now_s() - t0;
    if (total != (uint64_t)w->size * (uint64_t)w->count) {
        fprintf(stderr, "bench_conn: naive child got %llu bytes\n", (unsigned long long)total);
        failures++;
        elapsed = 0;
    }
out:
    close(sv[0]);
    if (child_status(pid) != 0 && elapsed != 0) {
        fprintf(stderr, "bench_conn: naive child failed\n");
        failures++;
        elapsed = 0;
    }
    free(buf);
    return elapsed;
}

/* ---------------------------------------------------------------- python */

/* Messages per second of multiprocessing.Pipe; 0 if python3 is missing or
 * the script fails (*why says which). */
static double run_python(const workload *w, int reps, const char **why) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "python3 '%s/pipe_throughput.py' %zu %ld %d 2>&1", CREW_BENCH_PYDIR, w->size,
             w->py_count, reps);
    FILE *f = popen(cmd, "r");
    if (f == NULL) {
        *why = "could not start a shell";
        return 0;
    }
    char line[1024];
    double rate = 0, mbps = 0;
    unsigned long long bytes = 0;
    size_t size = 0;
    long count = 0;
    bool found = false;
    while (fgets(line, sizeof line, f) != NULL)
        if (sscanf(line, "pipe_throughput size %zu count %ld msgs_per_s %lf mb_per_s %lf bytes %llu", &size,
                   &count, &rate, &mbps, &bytes) == 5)
            found = true;
    int st = pclose(f);
    if (st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 127) {
        *why = "python3 not found";
        return 0;
    }
    if (!found) {
        *why = "the script failed";
        return 0;
    }
    if (bytes != (unsigned long long)w->size * (unsigned long long)w->py_count) {
        fprintf(stderr, "bench_conn: python child got %llu bytes\n", bytes);
        failures++;
    }
    return rate;
}

/* ------------------------------------------------------------------ main */

static void usage(FILE *to) {
    fprintf(to,
            "usage: bench_conn [--quick]\n"
            "  messages between two processes: crew connections vs. a hand-written\n"
            "  socketpair protocol and Python's multiprocessing.Pipe\n"
            "  --quick  fewer messages and repetitions (about 15 seconds)\n");
}

static void fmt_rate(char *out, size_t n, double msgs_per_s, size_t size) {
    if (msgs_per_s >= 1e6)
        snprintf(out, n, "%.2f M msg/s (%.0f MB/s)", msgs_per_s / 1e6, msgs_per_s * (double)size / 1e6);
    else
        snprintf(out, n, "%.0f msg/s (%.0f MB/s)", msgs_per_s, msgs_per_s * (double)size / 1e6);
}

int main(int argc, char **argv) {
    bool quick = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0) {
            quick = true;
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "bench_conn: unknown argument '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    const workload *loads = quick ? quick_loads : full_loads;
    int reps = quick ? 3 : 5;
    int py_reps = quick ? 1 : 3;
    signal(SIGALRM, on_alarm);
    alarm(WATCHDOG_S);

    printf("bench_conn: crew %s, %d cpu(s), build type %s, %s run, best of %d (python best of %d)\n",
           crew_version(), crew_cpu_count(), CREW_BENCH_BUILD_TYPE, quick ? "quick" : "full", reps, py_reps);
    if (strcmp(CREW_BENCH_BUILD_TYPE, "Debug") == 0)
        printf("note: a Debug build; figures mean little without optimisation\n");
    printf("messages parent -> forked child; MB = 10^6 bytes of payload; ratio > 1: crew faster\n");
    fflush(stdout);

    for (int k = 0; k < 2; k++) {
        const workload *w = &loads[k];
        double crew = 0, naive = 0; /* best seconds */
        for (int r = 0; r < reps; r++) {
            double a, b;
            if (r % 2 == 0) {
                a = run_crew(w);
                b = run_naive(w);
            } else {
                b = run_naive(w);
                a = run_crew(w);
            }
            if (a > 0 && (crew == 0 || a < crew))
                crew = a;
            if (b > 0 && (naive == 0 || b < naive))
                naive = b;
        }
        if (crew == 0 || naive == 0) {
            printf("conn %s: failed, no figure\n", w->name);
            continue;
        }
        double crew_rate = (double)w->count / crew, naive_rate = (double)w->count / naive;
        const char *why = NULL;
        double py_rate = run_python(w, py_reps, &why);
        char c1[64], c2[64], c3[64];
        fmt_rate(c1, sizeof c1, crew_rate, w->size);
        fmt_rate(c2, sizeof c2, naive_rate, w->size);
        printf("conn %s messages, 2 processes: crew %s; naive socketpair C %s, ratio %.2fx", w->name, c1, c2,
               crew_rate / naive_rate);
        if (py_rate > 0) {
            fmt_rate(c3, sizeof c3, py_rate, w->size);
            printf("; python Pipe %s, ratio %.1fx\n", c3, crew_rate / py_rate);
        } else {
            printf("; python Pipe: %s, skipped\n", why);
        }
        fflush(stdout);
    }
    if (failures != 0) {
        fprintf(stderr, "bench_conn: %d failure(s); figures above are not valid\n", failures);
        return 1;
    }
    return 0;
}
