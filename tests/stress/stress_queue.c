/* Stress for queue.h: 8 producers and 8 consumers move test_scaled(10
 * million) items through one queue of capacity 1024, first as threads of
 * this process, then as forked processes sharing a CREW_SHARED queue in a
 * MAP_SHARED mapping; FIFO at full size, then LIFO and PRIORITY at a tenth.
 *
 * Every value is distinct: producer id << 40 | sequence number. Each run
 * ends with a conservation check: the consumers' counts and sums equal what
 * was produced, and a bitmap with one bit per value, set by whoever got it
 * with an atomic or, shows nothing doubled and, complete at the end, nothing
 * lost. Consumers task_done every item, and the main thread's join waits
 * for all of them before it stops the consumers: thread consumers at a
 * sentinel item each, process consumers at the queue's shutdown.
 *
 * For FIFO and PRIORITY each consumer also checks that every producer's
 * values reach it in increasing order. That holds with any number of
 * consumers: a producer's earlier item leaves the queue before its later one
 * (for PRIORITY because the earlier one is also the smaller).
 *
 * Work is scaled by CREW_STRESS_SCALE (test_scaled). Thread bodies and
 * children never call cmocka; they count errors, which the test asserts are
 * zero. Every blocking call has a long timeout, so a lost wake-up becomes an
 * error rather than a hang. Items per second are printed for information,
 * never asserted. */
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "crew/clock.h"
#include "crew/error.h"
#include "crew/queue.h"
#include "crew/sync.h"
#include "crew/thread.h"
#include "test_util.h"

#define NPROD 8
#define NCONS 8
#define CAPACITY 1024
#define WAIT 60.0          /* per blocking call: a hang becomes an error */
#define SENTINEL UINT64_MAX /* never a produced value (ids stop at NPROD) */
#define SEQ_BITS 40

/* Everything the producers and consumers share; in the process runs it lives
 * in a MAP_SHARED mapping with the queue after it. */
typedef struct result {
    _Atomic uint64_t count;    /* items put or got; polled by the killer */
    uint64_t sum;
    uint64_t errors;
    uint64_t first_error;      /* a code or a value, for the message */
} __attribute__((aligned(64))) result;

typedef struct run {
    crew_queue *q;
    crew_queue_kind kind;
    uint64_t per;              /* items per producer */
    double wait;               /* timeout of every put and get */
    bool task_done;            /* consumers task_done each item */
    result prod[NPROD];
    result cons[NCONS];
    _Atomic uint64_t *bits;    /* NPROD * per bits */
} run;

typedef struct role {
    run *r;
    int id;
} role;

static uint64_t value_of(int producer, uint64_t seq) {
    return ((uint64_t)(producer + 1) << SEQ_BITS) | seq;
}

static void note_error(result *res, uint64_t what) {
    if (res->errors++ == 0) res->first_error = what;
}

static int produce(run *r, int id) {
    result *res = &r->prod[id];
    for (uint64_t s = 0; s < r->per; s++) {
        uint64_t v = value_of(id, s);
        int rc = crew_queue_put(r->q, &v, r->wait);
        if (rc != 0) {
            note_error(res, (uint64_t)(int64_t)rc);
            break;
        }
        atomic_store_explicit(&res->count, s + 1, memory_order_relaxed);
        res->sum += v;
    }
    return (int)res->errors;
}

/* Takes items until a sentinel (threads) or the shutdown (processes). */
static int consume(run *r, int id) {
    result *res = &r->cons[id];
    uint64_t last[NPROD];
    for (int p = 0; p < NPROD; p++) last[p] = UINT64_MAX; /* none yet */
    for (;;) {
        uint64_t v;
        int rc = crew_queue_get(r->q, &v, r->wait);
        if (rc == CREW_ESHUTDOWN) break;
        if (rc != 0) {
            note_error(res, (uint64_t)(int64_t)rc);
            break;
        }
        /* Processed: join counts on it. */
        if (r->task_done && (rc = crew_queue_task_done(r->q)) != 0) note_error(res, (uint64_t)(int64_t)rc);
        if (v == SENTINEL) break;
        uint64_t p = (v >> SEQ_BITS) - 1, s = v & (((uint64_t)1 << SEQ_BITS) - 1);
        if (p >= NPROD || s >= r->per) {
            note_error(res, v);
            continue;
        }
        if (r->kind != CREW_LIFO) {
            if (last[p] != UINT64_MAX && s <= last[p]) note_error(res, v);
            last[p] = s;
        }
        uint64_t bit = p * r->per + s;
        uint64_t old = atomic_fetch_or_explicit(&r->bits[bit / 64], (uint64_t)1 << (bit % 64),
                                                memory_order_relaxed);
        if (old & ((uint64_t)1 << (bit % 64))) note_error(res, v); /* twice */
        atomic_fetch_add_explicit(&res->count, 1, memory_order_relaxed);
        res->sum += v;
    }
    return (int)res->errors;
}

static int producer_thread(void *arg) {
    role *ro = arg;
    return produce(ro->r, ro->id);
}

static int consumer_thread(void *arg) {
    role *ro = arg;
    return consume(ro->r, ro->id);
}

static size_t bitmap_bytes(uint64_t per) {
    return (size_t)((NPROD * per + 63) / 64 * 8);
}

/* The conservation check, after every producer and consumer has ended. */
static void check_run(run *r, const char *what, double seconds) {
    uint64_t produced = 0, psum = 0, consumed = 0, csum = 0, want_sum = 0;
    for (int p = 0; p < NPROD; p++) {
        if (r->prod[p].errors)
            fail_msg("%s: producer %d: %llu error(s), first %lld (%s)", what, p,
                     (unsigned long long)r->prod[p].errors, (long long)r->prod[p].first_error,
                     crew_err_name((int)(int64_t)r->prod[p].first_error));
        produced += r->prod[p].count;
        psum += r->prod[p].sum;
        for (uint64_t s = 0; s < r->per; s++) want_sum += value_of(p, s);
    }
    for (int c = 0; c < NCONS; c++) {
        if (r->cons[c].errors)
            fail_msg("%s: consumer %d: %llu error(s), first %#llx", what, c,
                     (unsigned long long)r->cons[c].errors, (unsigned long long)r->cons[c].first_error);
        consumed += r->cons[c].count;
        csum += r->cons[c].sum;
    }
    uint64_t total = NPROD * r->per;
    assert_int_equal(produced, total);
    assert_int_equal(psum, want_sum);
    assert_int_equal(consumed, total);
    assert_int_equal(csum, want_sum);
    uint64_t words = (total + 63) / 64;
    for (uint64_t w = 0; w < words; w++) {
        uint64_t want = (w + 1) * 64 <= total ? UINT64_MAX : (((uint64_t)1 << (total % 64)) - 1);
        uint64_t got = atomic_load_explicit(&r->bits[w], memory_order_relaxed);
        if (got != want) fail_msg("%s: values %llu.. missing (bitmap word %#llx)", what,
                                  (unsigned long long)(w * 64), (unsigned long long)got);
    }
    assert_int_equal(crew_queue_size(r->q), 0);
    printf("  %-28s %10llu items in %6.2f s: %6.2f M items/s\n", what, (unsigned long long)total, seconds,
           (double)total / seconds / 1e6);
    fflush(stdout);
}

static const char *kind_name(crew_queue_kind kind) {
    return kind == CREW_FIFO ? "fifo" : kind == CREW_LIFO ? "lifo" : "priority";
}

/* ---------------------------------------------------------------- threads */

static void threads_run(crew_queue_kind kind, long items) {
    run *r = calloc(1, sizeof *r);
    assert_non_null(r);
    r->kind = kind;
    r->wait = WAIT;
    r->task_done = true;
    r->per = (uint64_t)items / NPROD;
    if (r->per == 0) r->per = 1;
    r->bits = calloc(1, bitmap_bytes(r->per));
    assert_non_null(r->bits);
    assert_int_equal(crew_queue_create(&r->q, &(crew_queue_options){.item_size = sizeof(uint64_t),
                                                                   .capacity = CAPACITY, .kind = kind}),
                     0);

    crew_thread *ts[NPROD + NCONS];
    role roles[NPROD + NCONS];
    double t0 = crew_now();
    for (int i = 0; i < NCONS; i++) {
        roles[NPROD + i] = (role){r, i};
        assert_int_equal(crew_thread_start(&ts[NPROD + i], consumer_thread, &roles[NPROD + i], NULL), 0);
    }
    for (int i = 0; i < NPROD; i++) {
        roles[i] = (role){r, i};
        assert_int_equal(crew_thread_start(&ts[i], producer_thread, &roles[i], NULL), 0);
    }
    for (int i = 0; i < NPROD; i++) {
        assert_int_equal(crew_thread_join(ts[i], CREW_FOREVER, NULL), 0);
        crew_thread_free(ts[i]);
    }
    /* Every item processed (task_done'd) before the sentinels go in, one
     * per consumer: a LIFO or priority queue would hand a sentinel out
     * ahead of items still queued. */
    int joined = crew_queue_join(r->q, WAIT);
    for (int i = 0; i < NCONS; i++) {
        uint64_t s = SENTINEL;
        assert_int_equal(crew_queue_put(r->q, &s, WAIT), 0);
    }
    for (int i = 0; i < NCONS; i++) {
        assert_int_equal(crew_thread_join(ts[NPROD + i], CREW_FOREVER, NULL), 0);
        crew_thread_free(ts[NPROD + i]);
    }
    double dt = crew_now() - t0;
    assert_int_equal(joined, 0);
    char what[64];
    snprintf(what, sizeof what, "threads %s", kind_name(kind));
    check_run(r, what, dt);
    crew_queue_free(r->q);
    free(r->bits);
    free(r);
}

/* -------------------------------------------------------------- processes */

/* Reap a child within a generous deadline (killing it if it hangs); true if
 * it exited with status 0. */
static bool reap_child(pid_t pid) {
    int st = 0;
    pid_t r = 0;
    if (!TEST_WAIT_UNTIL((r = waitpid(pid, &st, WNOHANG)) != 0, 3 * WAIT)) {
        fprintf(stderr, "child %d still running after %.0f s: killed\n", (int)pid, 3 * WAIT);
        kill(pid, SIGKILL);
        waitpid(pid, &st, 0);
        return false;
    }
    return r == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

/* The run, the bitmap and the queue in one MAP_SHARED mapping. */
static run *shared_run(crew_queue_kind kind, long items, size_t *total) {
    crew_queue_options o = {.item_size = sizeof(uint64_t), .capacity = CAPACITY, .kind = kind,
                            .flags = CREW_SHARED};
    uint64_t per = (uint64_t)items / NPROD;
    if (per == 0) per = 1;
    size_t run_size = (sizeof(run) + 4095) / 4096 * 4096;
    size_t bits_size = (bitmap_bytes(per) + 4095) / 4096 * 4096;
    size_t qsize = crew_queue_footprint(&o);
    *total = run_size + bits_size + qsize;
    char *mem = mmap(NULL, *total, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    assert_true(mem != MAP_FAILED);
    run *r = (run *)mem;
    r->kind = kind;
    r->per = per;
    r->wait = WAIT;
    r->task_done = true;
    r->bits = (_Atomic uint64_t *)(mem + run_size);
    assert_int_equal(crew_queue_init(&r->q, mem + run_size + bits_size, qsize, &o), 0);
    return r;
}

/* Fork the consumers (pids[0..NCONS)) and producers (pids[NCONS..)). */
static void fork_all(run *r, pid_t *pids) {
    fflush(NULL);
    for (int i = 0; i < NPROD + NCONS; i++) {
        pids[i] = fork();
        assert_true(pids[i] >= 0);
        if (pids[i] == 0) {
            int errors = i < NCONS ? consume(r, i) : produce(r, i - NCONS);
            _exit(errors ? 1 : 0);
        }
    }
}

static void processes_run(crew_queue_kind kind, long items) {
    size_t total;
    run *r = shared_run(kind, items, &total);
    pid_t pids[NPROD + NCONS];
    double t0 = crew_now();
    fork_all(r, pids);
    /* Producers first; then shut down, and the consumers drain and stop. */
    int bad_exits = 0;
    for (int i = NCONS; i < NPROD + NCONS; i++) bad_exits += !reap_child(pids[i]);
    /* The consumers' task_done calls release the parent's join. */
    int joined = crew_queue_join(r->q, WAIT);
    assert_int_equal(crew_queue_shutdown(r->q, false), 0);
    for (int i = 0; i < NCONS; i++) bad_exits += !reap_child(pids[i]);
    double dt = crew_now() - t0;
    char what[64];
    snprintf(what, sizeof what, "processes %s", kind_name(kind));
    check_run(r, what, dt);
    assert_int_equal(bad_exits, 0);
    assert_int_equal(joined, 0);
    assert_int_equal(crew_queue_destroy(r->q), 0);
    assert_int_equal(munmap(r, total), 0);
}

/* Processes killed mid-run: two producers and two consumers get SIGKILL at
 * random points while items flow. The survivors must go on without a stall
 * (every put and get has a 20 s limit, an age for a queue that keeps
 * moving), and the bitmap must show every value once: all of a surviving
 * producer's; a killed producer's below its count, perhaps the one it was
 * putting, none beyond; less at most one item per killed consumer, which it
 * took with it. task_done is left out: a death may cut it off. */
static void processes_killed_run(crew_queue_kind kind, long items) {
    size_t total;
    run *r = shared_run(kind, items, &total);
    r->wait = 20.0;
    r->task_done = false;
    uint64_t seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 16);
    const char *env = getenv("CREW_TEST_SEED");
    if (env) seed = strtoull(env, NULL, 0);
    printf("  killed run seed %#llx (CREW_TEST_SEED)\n", (unsigned long long)seed);

    /* Victims, and the number of items consumed (by all) at which each
     * dies: between 5% and 45% of the whole, which the six surviving
     * producers alone exceed. */
    const int victims[4] = {NCONS + 1, 2, NCONS + 5, 6};
    uint64_t at[4], all = NPROD * r->per;
    for (int i = 0; i < 4; i++) {
        seed = seed * 6364136223846793005u + 1442695040888963407u;
        at[i] = all / 20 + (seed >> 33) % (all * 2 / 5 + 1);
    }
    for (int i = 1; i < 4; i++) /* ascending */
        for (int k = i; k > 0 && at[k] < at[k - 1]; k--) {
            uint64_t t = at[k];
            at[k] = at[k - 1];
            at[k - 1] = t;
        }

    pid_t pids[NPROD + NCONS];
    bool dead[NPROD + NCONS] = {false};
    double t0 = crew_now();
    fork_all(r, pids);
    int bad_kills = 0;
    for (int i = 0; i < 4; i++) {
        bool reached = TEST_WAIT_UNTIL(({
            uint64_t got = 0;
            for (int c = 0; c < NCONS; c++)
                got += atomic_load_explicit(&r->cons[c].count, memory_order_relaxed);
            got >= at[i];
        }), 3 * WAIT);
        int v = victims[i];
        kill(pids[v], SIGKILL);
        int st = 0;
        waitpid(pids[v], &st, 0);
        dead[v] = true;
        if (!reached || !WIFSIGNALED(st) || WTERMSIG(st) != SIGKILL) bad_kills++;
    }
    int bad_exits = 0;
    for (int i = NCONS; i < NPROD + NCONS; i++)
        if (!dead[i]) bad_exits += !reap_child(pids[i]);
    assert_int_equal(crew_queue_shutdown(r->q, false), 0);
    for (int i = 0; i < NCONS; i++)
        if (!dead[i]) bad_exits += !reap_child(pids[i]);
    double dt = crew_now() - t0;

    for (int i = 0; i < NPROD + NCONS; i++) {
        result *res = i < NCONS ? &r->cons[i] : &r->prod[i - NCONS];
        if (!dead[i] && res->errors)
            fail_msg("%s %d: %llu error(s), first %#llx (%s)", i < NCONS ? "consumer" : "producer",
                     i < NCONS ? i : i - NCONS, (unsigned long long)res->errors,
                     (unsigned long long)res->first_error, crew_err_name((int)(int64_t)res->first_error));
    }
    assert_int_equal(bad_kills, 0);
    assert_int_equal(bad_exits, 0);
    uint64_t missing = 0, moved = 0;
    for (int p = 0; p < NPROD; p++) {
        uint64_t put = atomic_load(&r->prod[p].count);
        if (!dead[NCONS + p]) assert_int_equal(put, r->per);
        for (uint64_t s = 0; s < r->per; s++) {
            uint64_t bit = (uint64_t)p * r->per + s;
            bool seen = (atomic_load_explicit(&r->bits[bit / 64], memory_order_relaxed) >> (bit % 64)) & 1;
            moved += seen;
            if (s < put && !seen) missing++;
            if (s > put && seen)
                fail_msg("producer %d: value %llu got, but it was killed after %llu puts", p,
                         (unsigned long long)s, (unsigned long long)put);
        }
    }
    if (missing > 2) fail_msg("%llu items lost (at most 2 may go with the killed consumers)",
                              (unsigned long long)missing);
    assert_int_equal(crew_queue_size(r->q), 0);
    printf("  %-28s %10llu items in %6.2f s: %6.2f M items/s; 4 killed, %llu lost with them\n",
           kind == CREW_FIFO ? "processes fifo, killed" : "processes priority, killed",
           (unsigned long long)moved, dt, (double)moved / dt / 1e6, (unsigned long long)missing);
    fflush(stdout);
    /* Not destroyed: dead waiters may keep it busy (test_queue covers it). */
    assert_int_equal(munmap(r, total), 0);
}

static void stress_threads_fifo(void **state) {
    (void)state;
    threads_run(CREW_FIFO, test_scaled(10000000));
}
static void stress_processes_fifo(void **state) {
    (void)state;
    processes_run(CREW_FIFO, test_scaled(10000000));
}
static void stress_processes_fifo_killed(void **state) {
    (void)state;
    processes_killed_run(CREW_FIFO, test_scaled(2000000));
}
static void stress_processes_priority_killed(void **state) {
    (void)state;
    processes_killed_run(CREW_PRIORITY, test_scaled(1000000));
}
static void stress_processes_lifo(void **state) {
    (void)state;
    processes_run(CREW_LIFO, test_scaled(1000000));
}
static void stress_threads_lifo(void **state) {
    (void)state;
    threads_run(CREW_LIFO, test_scaled(1000000));
}
static void stress_threads_priority(void **state) {
    (void)state;
    threads_run(CREW_PRIORITY, test_scaled(1000000));
}
static void stress_processes_priority(void **state) {
    (void)state;
    processes_run(CREW_PRIORITY, test_scaled(1000000));
}

#define S(name) cmocka_unit_test(name)

int main(void) {
    const struct CMUnitTest tests[] = {
        S(stress_threads_fifo),
        S(stress_processes_fifo),
        S(stress_processes_fifo_killed),
        S(stress_threads_lifo),
        S(stress_processes_lifo),
        S(stress_threads_priority),
        S(stress_processes_priority),
        S(stress_processes_priority_killed),
    };
    printf("stress scale %.2f\n", test_scale());
    const char *filter = getenv("CREW_TEST_FILTER"); /* a glob over the names */
    if (filter != NULL && *filter != '\0') cmocka_set_test_filter(filter);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
