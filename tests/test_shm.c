/* Unit tests for the shm module: the shared arena (allocation, zeroing,
 * alignment, accounting, sharing with forked children in both directions,
 * many threads and processes at once, growth, exhaustion, recovery from a
 * process that dies inside the allocator) and named segments (create,
 * attach, errors, another process attaching by name, and the tracker that
 * unlinks what a process family leaves behind, SIGKILL included).
 *
 * Each test runs in a process of its own (see main), so each starts with no
 * arena and no tracker: the arena is set up once per process, and a tracker
 * serves the process that started it and its descendants, so a test that
 * wants a family to end forks that family from its own process. Forked
 * children report through their exit status; helper threads record what
 * they saw and the main thread checks it after joining them. Children are
 * forked before any helper thread starts.
 *
 * Segment names are "crew-test-<pid of the runner>-<tag>-<n>", so that main
 * can check at the end that no test left one behind. Nothing here sleeps to
 * wait for another process: it polls the condition (a name gone from
 * /dev/shm, a process ended) with a generous deadline.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "crew/error.h"
#include "crew/shm.h"
#include "shm_internal.h"

/* How long one test process may run before the runner kills it. */
#define TEST_PROCESS_LIMIT 100.0
#include "test_harness.h"

/* How long a name may take to disappear, or a process to end, after the
 * event that should cause it. */
#define GONE_WAIT 10.0
#define KiB ((size_t)1 << 10)
#define MiB ((size_t)1 << 20)

/* The runner's pid: the prefix of every segment name a test makes. */
static pid_t g_runner;

/* ------------------------------------------------------ processes, names */

/* Run fn in a fresh child process and expect it to succeed: for tests that
 * need an arena set up in a particular way (setup is once per process). */
static void run_fresh(child_fn fn, void *arg) { reap_ok(fork_child(fn, arg)); }

static void make_pipe(int fds[2]) {
    if (pipe2(fds, O_CLOEXEC) != 0) {
        print_error("pipe2: %s\n", strerror(errno));
        fail();
    }
}

static bool write_all(int fd, const void *buf, size_t n) {
    const char *p = buf;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return false;
        p += w;
        n -= (size_t)w;
    }
    return true;
}

static bool read_all(int fd, void *buf, size_t n) {
    char *p = buf;
    while (n > 0) {
        ssize_t r = read(fd, p, n);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return false;
        p += r;
        n -= (size_t)r;
    }
    return true;
}

/* A segment name unique to this run and call ("crew-test-<runner>-tag-n"). */
static void seg_name(char *buf, size_t size, const char *tag) {
    static int n;
    snprintf(buf, size, "crew-test-%d-%s-%d-%d", (int)g_runner, tag, (int)getpid(), n++);
}

static bool seg_exists(const char *name) {
    char path[512];
    snprintf(path, sizeof path, "/dev/shm/%s", name[0] == '/' ? name + 1 : name);
    return access(path, F_OK) == 0;
}

/* A process that has ended (gone, or a zombie nobody reaped yet). */
static bool proc_ended(pid_t pid) {
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return true;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return true;
    buf[n] = '\0';
    const char *p = strrchr(buf, ')');
    return p == NULL || p[1] != ' ' || p[2] == 'Z' || p[2] == 'X';
}

/* Field `index` (1-based, as in proc(5)) of /proc/pid/stat, or -1. */
static long proc_stat_field(pid_t pid, int index) {
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return -1;
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    if (p == NULL) return -1;
    p += 2; /* field 3, the state */
    for (int i = 3; i < index; i++) {
        p = strchr(p, ' ');
        if (p == NULL) return -1;
        p++;
    }
    return strtol(p, NULL, 10);
}

/* ---------------------------------------------------------- block fill */

static void fill(void *p, size_t n, uint64_t seed) {
    unsigned char *b = p;
    for (size_t i = 0; i < n; i++) b[i] = (unsigned char)(seed * 0x9e3779b97f4a7c15ull >> 56 ^ i * 31);
}

static bool filled(const void *p, size_t n, uint64_t seed) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        if (b[i] != (unsigned char)(seed * 0x9e3779b97f4a7c15ull >> 56 ^ i * 31)) return false;
    return true;
}

static bool all_zero(const void *p, size_t n) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        if (b[i] != 0) return false;
    return true;
}

/* Deterministic pseudo-random numbers (xorshift). */
static uint64_t rnd(uint64_t *s) {
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

/* A size from 1 byte to `max`, spread over the powers of two. */
static size_t rnd_size(uint64_t *s, size_t max) {
    unsigned bits = 0;
    while (((size_t)1 << bits) < max) bits++;
    size_t cap = (size_t)1 << (rnd(s) % (bits + 1));
    size_t n = 1 + rnd(s) % cap;
    return n > max ? max : n;
}

/* =============================================================== arena */

static void test_arena_before_setup(void **state) {
    (void)state;
    int local = 0;
    assert_int_equal(crew_shm_arena_size(), 0);
    assert_int_equal(crew_shm_arena_used(), 0);
    assert_false(crew_shm_contains(&local));
    assert_false(crew_shm_contains(NULL));
    ASSERT_RC(crew_shm_free(&local), CREW_EINVAL);
    ASSERT_RC(crew_shm_free(NULL), 0);
    ASSERT_RC(crew__shm_arena_check(), CREW_EINVAL);

    ASSERT_RC(crew_shm_setup(NULL), 0);
    ASSERT_RC(crew_shm_setup(&(crew_shm_arena_options){.reserve = MiB}), 0); /* ignored */
    assert_true(crew_shm_arena_size() > 0);
    assert_int_equal(crew_shm_arena_size() % (size_t)sysconf(_SC_PAGESIZE), 0);
    assert_int_equal(crew_shm_arena_used(), 0);
    assert_false(crew_shm_contains(&local));
    ASSERT_RC(crew__shm_arena_check(), 0);
}

static void test_arena_basic(void **state) {
    (void)state;
    assert_null(crew_shm_alloc(0));
    unsigned char *p = crew_shm_alloc(1);
    assert_non_null(p);
    assert_int_equal((uintptr_t)p % 64, 0);
    assert_true(crew_shm_contains(p));
    assert_int_equal(p[0], 0);
    size_t used1 = crew_shm_arena_used();
    assert_true(used1 >= 1);
    p[0] = 0xab;

    unsigned char *q = crew_shm_alloc(1000);
    assert_non_null(q);
    assert_int_equal((uintptr_t)q % 64, 0);
    assert_true(all_zero(q, 1000));
    assert_true(q >= p + 1 || q + 1000 <= p);
    assert_true(crew_shm_arena_used() >= used1 + 1000);
    memset(q, 0x5a, 1000);
    assert_int_equal(p[0], 0xab);

    /* Not a block: inside one, misaligned, on the stack, on the heap. */
    int local;
    void *heap = malloc(64);
    assert_non_null(heap);
    ASSERT_RC(crew_shm_free(q + 64), CREW_EINVAL);
    ASSERT_RC(crew_shm_free(q + 1), CREW_EINVAL);
    ASSERT_RC(crew_shm_free(&local), CREW_EINVAL);
    ASSERT_RC(crew_shm_free(heap), CREW_EINVAL);
    free(heap);

    ASSERT_RC(crew_shm_free(p), 0);
    ASSERT_RC(crew_shm_free(p), CREW_EINVAL); /* double free */
    ASSERT_RC(crew_shm_free(q), 0);
    ASSERT_RC(crew_shm_free(q), CREW_EINVAL);
    assert_int_equal(crew_shm_arena_used(), 0);
    ASSERT_RC(crew__shm_arena_check(), 0);

    /* Sizes no arena can hold. */
    assert_null(crew_shm_alloc(SIZE_MAX));
    assert_null(crew_shm_alloc(SIZE_MAX - 8));
    assert_int_equal(crew_shm_arena_used(), 0);
}

/* Freed memory comes back zeroed, whatever size and wherever it comes from
 * (a free list, a split block, the top, a hole punched in a large block). */
static void test_arena_zeroed_reuse(void **state) {
    (void)state;
    static const size_t sizes[] = {1, 48, 64, 100, 1000, 4096, 5000, 65536, 3 * MiB, 100, 7};
    enum { N = sizeof sizes / sizeof sizes[0] };
    for (int round = 0; round < 3; round++) {
        void *p[N];
        for (int i = 0; i < N; i++) {
            p[i] = crew_shm_alloc(sizes[i]);
            assert_non_null(p[i]);
            assert_int_equal((uintptr_t)p[i] % 64, 0);
            if (!all_zero(p[i], sizes[i])) {
                print_error("round %d: block %d (%zu bytes) not zeroed\n", round, i, sizes[i]);
                fail();
            }
            memset(p[i], 0xa5, sizes[i]);
        }
        /* Free in an order that makes merges in both directions. */
        for (int i = 0; i < N; i += 2) ASSERT_RC(crew_shm_free(p[i]), 0);
        for (int i = 1; i < N; i += 2) ASSERT_RC(crew_shm_free(p[i]), 0);
        ASSERT_RC(crew__shm_arena_check(), 0);
        assert_int_equal(crew_shm_arena_used(), 0);
    }
    /* Blocks of every small size, freed and taken again from the lists. */
    void *v[200];
    for (int i = 0; i < 200; i++) {
        v[i] = crew_shm_alloc((size_t)i * 40 + 1);
        assert_non_null(v[i]);
        memset(v[i], 0xee, (size_t)i * 40 + 1);
    }
    for (int i = 0; i < 200; i += 2) ASSERT_RC(crew_shm_free(v[i]), 0);
    for (int i = 0; i < 200; i += 2) {
        v[i] = crew_shm_alloc((size_t)(199 - i) * 40 + 1);
        assert_non_null(v[i]);
        assert_true(all_zero(v[i], (size_t)(199 - i) * 40 + 1));
    }
    for (int i = 0; i < 200; i++) ASSERT_RC(crew_shm_free(v[i]), 0);
    ASSERT_RC(crew__shm_arena_check(), 0);
    assert_int_equal(crew_shm_arena_used(), 0);
}

/* A random mix of allocations and frees, checking contents and the
 * allocator's invariants as it goes. */
static void test_arena_random(void **state) {
    (void)state;
    enum { LIVE = 300 };
    void *ptr[LIVE] = {0};
    size_t len[LIVE] = {0};
    uint64_t seed[LIVE] = {0};
    uint64_t s = 88172645463325252ull;
    long ops = test_scaled(20000);
    for (long op = 0; op < ops; op++) {
        int i = (int)(rnd(&s) % LIVE);
        if (ptr[i] != NULL) {
            if (!filled(ptr[i], len[i], seed[i])) {
                print_error("op %ld: block %d (%zu bytes) was overwritten\n", op, i, len[i]);
                fail();
            }
            ASSERT_RC(crew_shm_free(ptr[i]), 0);
            ptr[i] = NULL;
        } else {
            len[i] = rnd_size(&s, 64 * KiB);
            ptr[i] = crew_shm_alloc(len[i]);
            assert_non_null(ptr[i]);
            assert_int_equal((uintptr_t)ptr[i] % 64, 0);
            assert_true(all_zero(ptr[i], len[i]));
            seed[i] = rnd(&s);
            fill(ptr[i], len[i], seed[i]);
        }
        if (op % 1000 == 0) ASSERT_RC(crew__shm_arena_check(), 0);
    }
    for (int i = 0; i < LIVE; i++) {
        if (ptr[i] == NULL) continue;
        assert_true(filled(ptr[i], len[i], seed[i]));
        ASSERT_RC(crew_shm_free(ptr[i]), 0);
    }
    ASSERT_RC(crew__shm_arena_check(), 0);
    assert_int_equal(crew_shm_arena_used(), 0);
}

/* ---------------------------------------------- many threads, processes */

typedef struct churn {
    pthread_t th;
    int id;
    long ops;
    long bad;          /* blocks found overwritten, failed calls */
} churn;

/* Allocate and free at random, keeping up to 64 blocks, each filled with a
 * pattern of its own: an overlap between blocks shows as a broken pattern. */
static long churn_run(int id, long ops) {
    enum { LIVE = 64 };
    void *ptr[LIVE] = {0};
    size_t len[LIVE] = {0};
    uint64_t seed[LIVE] = {0};
    uint64_t s = 0x2545f4914f6cdd1dull + (uint64_t)id * 7919;
    long bad = 0;
    for (long op = 0; op < ops; op++) {
        int i = (int)(rnd(&s) % LIVE);
        if (ptr[i] != NULL) {
            if (!filled(ptr[i], len[i], seed[i])) bad++;
            if (crew_shm_free(ptr[i]) != 0) bad++;
            ptr[i] = NULL;
        } else {
            len[i] = rnd_size(&s, 16 * KiB);
            ptr[i] = crew_shm_alloc(len[i]);
            if (ptr[i] == NULL || (uintptr_t)ptr[i] % 64 != 0 || !all_zero(ptr[i], len[i])) {
                bad++;
                ptr[i] = NULL;
                continue;
            }
            seed[i] = rnd(&s) ^ (uint64_t)id << 48;
            fill(ptr[i], len[i], seed[i]);
        }
    }
    for (int i = 0; i < LIVE; i++) {
        if (ptr[i] == NULL) continue;
        if (!filled(ptr[i], len[i], seed[i])) bad++;
        if (crew_shm_free(ptr[i]) != 0) bad++;
    }
    return bad;
}

static void *churn_main(void *p) {
    churn *c = p;
    c->bad = churn_run(c->id, c->ops);
    return NULL;
}

static void test_arena_threads(void **state) {
    (void)state;
    enum { THREADS = 8 };
    ASSERT_RC(crew_shm_setup(NULL), 0);
    churn c[THREADS];
    for (int i = 0; i < THREADS; i++) {
        c[i] = (churn){.id = i, .ops = test_scaled(20000)};
        assert_int_equal(pthread_create(&c[i].th, NULL, churn_main, &c[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        assert_int_equal(pthread_join(c[i].th, NULL), 0);
        assert_int_equal(c[i].bad, 0);
    }
    ASSERT_RC(crew__shm_arena_check(), 0);
    assert_int_equal(crew_shm_arena_used(), 0);
}

static int churn_child(void *arg) { return churn_run((int)(intptr_t)arg, test_scaled(20000)) == 0 ? 0 : 1; }

static void test_arena_processes(void **state) {
    (void)state;
    enum { PROCS = 4 };
    ASSERT_RC(crew_shm_setup(NULL), 0);
    pid_t kids[PROCS];
    for (int i = 0; i < PROCS; i++) kids[i] = fork_child(churn_child, (void *)(intptr_t)(i + 100));
    long bad = churn_run(0, test_scaled(20000));
    for (int i = 0; i < PROCS; i++) reap_ok(kids[i]);
    assert_int_equal(bad, 0);
    ASSERT_RC(crew__shm_arena_check(), 0);
    assert_int_equal(crew_shm_arena_used(), 0);
}

/* Children churning the arena are SIGKILLed at arbitrary moments, some of
 * them inside the allocator: whatever the moment, the arena stays sound. */
static int churn_forever(void *arg) {
    _Atomic long *progress = arg;
    int id = (int)getpid();
    do {
        churn_run(id, 200);
    } while (atomic_fetch_add(progress, 1) >= 0);
    return 0; /* not reached: killed */
}

static void test_arena_killed_children(void **state) {
    (void)state;
    enum { PROCS = 3 };
    ASSERT_RC(crew_shm_setup(NULL), 0);
    _Atomic long *progress = crew_shm_alloc(sizeof *progress);
    assert_non_null(progress);
    for (int round = 0; round < (int)test_scaled(6); round++) {
        pid_t kids[PROCS];
        long start = atomic_load(progress);
        for (int i = 0; i < PROCS; i++) kids[i] = fork_child(churn_forever, progress);
        for (int i = 0; i < PROCS; i++) {
            assert_true(TEST_WAIT_UNTIL(atomic_load(progress) >= start + 2 * (i + 1), 30.0));
            kill(kids[i], SIGKILL);
        }
        for (int i = 0; i < PROCS; i++) {
            int st = reap(kids[i]);
            assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
        }
        ASSERT_RC(crew__shm_arena_check(), 0);
        /* Still usable by the living. */
        assert_int_equal(churn_run(round, 500), 0);
        ASSERT_RC(crew__shm_arena_check(), 0);
    }
    ASSERT_RC(crew_shm_free(progress), 0);
}

/* ------------------------------------------------------------------ fork */

typedef struct share {
    char *block;
    int to_child[2], to_parent[2];
} share;

static int child_sees_parent(void *arg) {
    share *s = arg;
    CHILD_CHECK(crew_shm_contains(s->block));
    CHILD_CHECK(strcmp(s->block, "from the parent") == 0);
    strcpy(s->block + 64, "from the child");
    return 0;
}

/* Bytes written before the fork are seen by the child at the same address,
 * and what the child writes is seen by the parent. */
static void test_arena_fork_shares(void **state) {
    (void)state;
    share s = {.block = crew_shm_alloc(256)};
    assert_non_null(s.block);
    strcpy(s.block, "from the parent");
    reap_ok(fork_child(child_sees_parent, &s));
    assert_string_equal(s.block + 64, "from the child");
    ASSERT_RC(crew_shm_free(s.block), 0);
}

static int child_reads_late_block(void *arg) {
    share *s = arg;
    close(s->to_child[1]);
    close(s->to_parent[0]);
    unsigned char *p;
    size_t n;
    CHILD_CHECK(read_all(s->to_child[0], &p, sizeof p));
    CHILD_CHECK(read_all(s->to_child[0], &n, sizeof n));
    CHILD_CHECK(crew_shm_contains(p));
    CHILD_CHECK(filled(p, n, 42));
    p[n - 1] ^= 0xff; /* the answer */
    char ok = 1;
    CHILD_CHECK(write_all(s->to_parent[1], &ok, 1));
    return 0;
}

/* Memory the parent allocates after the fork, large enough to grow the
 * file, is visible to the child at the pointer the parent passes it. */
static void test_arena_after_fork_visible(void **state) {
    (void)state;
    share s;
    ASSERT_RC(crew_shm_setup(NULL), 0);
    make_pipe(s.to_child);
    make_pipe(s.to_parent);
    size_t before = crew_shm_arena_size();
    pid_t pid = fork_child(child_reads_late_block, &s);
    close(s.to_child[0]);
    close(s.to_parent[1]);
    size_t n = 8 * MiB;
    unsigned char *p = crew_shm_alloc(n);
    assert_non_null(p);
    assert_true(crew_shm_arena_size() >= before + n);
    fill(p, n, 42);
    assert_true(write_all(s.to_child[1], &p, sizeof p));
    assert_true(write_all(s.to_child[1], &n, sizeof n));
    char ok = 0;
    assert_true(read_all(s.to_parent[0], &ok, 1));
    reap_ok(pid);
    p[n - 1] ^= 0xff;
    assert_true(filled(p, n, 42));
    close(s.to_child[1]);
    close(s.to_parent[0]);
    ASSERT_RC(crew_shm_free(p), 0);
    assert_int_equal(crew_shm_arena_used(), 0);
}

static int child_allocates(void *arg) {
    share *s = arg;
    close(s->to_parent[0]);
    unsigned char *p = crew_shm_alloc(5000);
    CHILD_CHECK(p != NULL);
    fill(p, 5000, 7);
    CHILD_CHECK(write_all(s->to_parent[1], &p, sizeof p));
    return 0; /* exits without freeing: the parent does */
}

static void test_arena_child_allocs_parent_frees(void **state) {
    (void)state;
    share s;
    ASSERT_RC(crew_shm_setup(NULL), 0);
    make_pipe(s.to_parent);
    pid_t pid = fork_child(child_allocates, &s);
    close(s.to_parent[1]);
    unsigned char *p = NULL;
    assert_true(read_all(s.to_parent[0], &p, sizeof p));
    reap_ok(pid);
    close(s.to_parent[0]);
    assert_true(crew_shm_contains(p));
    assert_true(filled(p, 5000, 7));
    assert_true(crew_shm_arena_used() >= 5000);
    ASSERT_RC(crew_shm_free(p), 0);
    ASSERT_RC(crew_shm_free(p), CREW_EINVAL);
    assert_int_equal(crew_shm_arena_used(), 0);
    ASSERT_RC(crew__shm_arena_check(), 0);
}

/* --------------------------------------------- growth, reserve, options */

static void test_arena_large(void **state) {
    (void)state;
    size_t before = crew_shm_arena_size();
    size_t n = 64 * MiB;
    unsigned char *p = crew_shm_alloc(n);
    assert_non_null(p);
    assert_true(crew_shm_arena_size() >= before + n);
    assert_true(crew_shm_arena_used() >= n);
    /* Touch a few pages only: the rest never needs memory. */
    for (size_t off = 0; off < n; off += 8 * MiB) {
        assert_int_equal(p[off], 0);
        p[off] = 1;
    }
    p[n - 1] = 1;
    ASSERT_RC(crew_shm_free(p), 0);
    size_t high = crew_shm_arena_size();
    unsigned char *q = crew_shm_alloc(n);
    assert_non_null(q);
    for (size_t off = 0; off < n; off += 8 * MiB) assert_int_equal(q[off], 0);
    assert_int_equal(q[n - 1], 0);
    assert_int_equal(crew_shm_arena_size(), high); /* reused, not grown */
    ASSERT_RC(crew_shm_free(q), 0);
    assert_int_equal(crew_shm_arena_used(), 0);
    ASSERT_RC(crew__shm_arena_check(), 0);
}

static int child_small_reserve(void *arg) {
    (void)arg;
    size_t reserve = MiB;
    CHILD_RC(crew_shm_setup(&(crew_shm_arena_options){.reserve = reserve}), 0);
    CHILD_RC(crew_shm_setup(&(crew_shm_arena_options){.reserve = 8 * reserve}), 0);
    CHILD_CHECK(crew_shm_alloc(2 * MiB) == NULL);
    CHILD_CHECK(crew_shm_alloc(reserve) == NULL); /* the header takes a page */
    enum { MAX = 128 };
    void *blocks[MAX];
    int n = 0;
    while (n < MAX && (blocks[n] = crew_shm_alloc(16 * KiB)) != NULL) {
        memset(blocks[n], 0x33, 16 * KiB);
        n++;
    }
    /* 1 MiB less a page, in blocks of 16 KiB + 64. */
    CHILD_CHECK(n >= 60 && n < 64);
    CHILD_CHECK(crew_shm_arena_size() <= reserve);
    CHILD_CHECK(crew_shm_alloc(16 * KiB) == NULL);
    for (int i = 0; i < n; i++) CHILD_RC(crew_shm_free(blocks[i]), 0);
    CHILD_RC(crew__shm_arena_check(), 0);
    /* All of it usable again, also as one block. */
    void *big = crew_shm_alloc(reserve - 64 * KiB);
    CHILD_CHECK(big != NULL);
    CHILD_CHECK(all_zero(big, reserve - 64 * KiB));
    CHILD_RC(crew_shm_free(big), 0);
    CHILD_RC(crew__shm_arena_check(), 0);
    return 0;
}

static void test_arena_reserve_exhausted(void **state) {
    (void)state;
    run_fresh(child_small_reserve, NULL);
}

static int child_env_reserve(void *arg) {
    (void)arg;
    CHILD_CHECK(setenv("CREW_ARENA_RESERVE", "2M", 1) == 0);
    void *p = crew_shm_alloc(1); /* sets up with the environment's reserve */
    CHILD_CHECK(p != NULL);
    CHILD_CHECK(crew_shm_alloc(3 * MiB) == NULL);
    void *q = crew_shm_alloc(MiB);
    CHILD_CHECK(q != NULL);
    CHILD_CHECK(crew_shm_arena_size() <= 2 * MiB);
    CHILD_RC(crew_shm_free(p), 0);
    CHILD_RC(crew_shm_free(q), 0);
    return 0;
}

static int child_env_bad(void *arg) {
    (void)arg;
    CHILD_CHECK(setenv("CREW_ARENA_RESERVE", "lots", 1) == 0);
    CHILD_RC(crew_shm_setup(NULL), CREW_EINVAL);
    CHILD_CHECK(crew_shm_alloc(1) == NULL);
    CHILD_CHECK(crew_shm_arena_size() == 0);
    /* An explicit reserve does not read the environment. */
    CHILD_RC(crew_shm_setup(&(crew_shm_arena_options){.reserve = 4 * MiB}), 0);
    void *p = crew_shm_alloc(1);
    CHILD_CHECK(p != NULL);
    CHILD_RC(crew_shm_free(p), 0);
    return 0;
}

static void test_arena_env_reserve(void **state) {
    (void)state;
    run_fresh(child_env_reserve, NULL);
    run_fresh(child_env_bad, NULL);
}

/* Address space for the arena beyond the current mappings. */
static bool limit_address_space(size_t headroom) {
    FILE *f = fopen("/proc/self/status", "r");
    if (f == NULL) return false;
    char line[256];
    unsigned long long kib = 0;
    while (fgets(line, sizeof line, f) != NULL)
        if (sscanf(line, "VmSize: %llu kB", &kib) == 1) break;
    fclose(f);
    if (kib == 0) return false;
    struct rlimit rl = {.rlim_cur = (rlim_t)(kib * 1024 + headroom), .rlim_max = RLIM_INFINITY};
    getrlimit(RLIMIT_AS, &rl);
    rl.rlim_cur = (rlim_t)(kib * 1024 + headroom);
    return setrlimit(RLIMIT_AS, &rl) == 0;
}

static int child_default_fallback(void *arg) {
    (void)arg;
    CHILD_CHECK(limit_address_space((size_t)3 << 30));
    CHILD_RC(crew_shm_setup(NULL), 0); /* 64 GiB does not fit; less does */
    void *p = crew_shm_alloc(MiB);
    CHILD_CHECK(p != NULL);
    CHILD_RC(crew_shm_free(p), 0);
    return 0;
}

static int child_explicit_too_big(void *arg) {
    (void)arg;
    CHILD_CHECK(limit_address_space((size_t)3 << 30));
    CHILD_RC(crew_shm_setup(&(crew_shm_arena_options){.reserve = (size_t)64 << 30}), CREW_ENOMEM);
    CHILD_RC(crew_shm_setup(&(crew_shm_arena_options){.reserve = (size_t)1 << 50}), CREW_ENOMEM);
    CHILD_CHECK(crew_shm_arena_size() == 0);
    CHILD_RC(crew_shm_setup(&(crew_shm_arena_options){.reserve = (size_t)1 << 30}), 0);
    return 0;
}

/* The default reserve adapts to a limited address space; an explicit one is
 * taken as asked or refused. */
static void test_arena_address_limit(void **state) {
    (void)state;
    run_fresh(child_default_fallback, NULL);
    run_fresh(child_explicit_too_big, NULL);
}

static void test_parse_size(void **state) {
    (void)state;
    static const struct {
        const char *s;
        int rc;
        size_t v;
    } cases[] = {
        {"0", 0, 0},
        {"4096", 0, 4096},
        {"1k", 0, 1024},
        {"1K", 0, 1024},
        {"3M", 0, 3 * MiB},
        {"2g", 0, (size_t)2 << 30},
        {"64G", 0, (size_t)64 << 30},
        {"1T", 0, (size_t)1 << 40},
        {"18446744073709551615", 0, SIZE_MAX},
        {"18446744073709551616", CREW_EINVAL, 0},
        {"16777216T", CREW_EINVAL, 0},
        {"", CREW_EINVAL, 0},
        {"M", CREW_EINVAL, 0},
        {"-1", CREW_EINVAL, 0},
        {" 1", CREW_EINVAL, 0},
        {"1 ", CREW_EINVAL, 0},
        {"1KB", CREW_EINVAL, 0},
        {"1.5G", CREW_EINVAL, 0},
        {"1P", CREW_EINVAL, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t v = 12345;
        int rc = crew__shm_parse_size(cases[i].s, &v);
        if (rc != cases[i].rc || (rc == 0 && v != cases[i].v)) {
            print_error("parse \"%s\": rc %d value %zu, expected rc %d value %zu\n", cases[i].s, rc,
                        v, cases[i].rc, cases[i].v);
            fail();
        }
    }
    size_t v;
    ASSERT_RC(crew__shm_parse_size(NULL, &v), CREW_EINVAL);
}

/* ------------------------------------------------- death in the allocator */

/* A sequence that passes every crash point: a split from a free list,
 * allocations from the top with and without growing the file, frees that
 * merge with the next block, the previous one, both, and neither. */
static int child_crash_script(void *arg) {
    crew__shm_crash_point = (int)(intptr_t)arg;
    void *a = crew_shm_alloc(100);          /* split of the parent's free 4 KiB */
    void *b = crew_shm_alloc(8 * KiB);      /* from the top */
    void *c = crew_shm_alloc(4 * MiB);      /* from the top, growing the file */
    void *d[4];
    for (int i = 0; i < 4; i++) d[i] = crew_shm_alloc(64);
    void *guard = crew_shm_alloc(64);
    crew_shm_free(d[0]);                    /* listed */
    crew_shm_free(d[2]);                    /* listed */
    crew_shm_free(d[1]);                    /* merges next and previous */
    (void)a, (void)b, (void)c, (void)guard;
    return 0; /* no crash point matched: the parent reports it */
}

/* One crash point, in a fresh process with a known layout: sixteen blocks of
 * the parent's with a free 4 KiB hole among them, which the child's small
 * allocations split. */
static int crash_case(void *arg) {
    int point = (int)(intptr_t)arg;
    CHILD_RC(crew_shm_setup(NULL), 0);
    enum { MINE = 16 };
    void *mine[MINE];
    for (int i = 0; i < MINE; i++) {
        mine[i] = crew_shm_alloc(4000);
        CHILD_CHECK(mine[i] != NULL);
        fill(mine[i], 4000, (uint64_t)i + 1);
    }
    CHILD_RC(crew_shm_free(mine[3]), 0);
    mine[3] = NULL;
    fflush(NULL);
    pid_t pid = fork();
    CHILD_CHECK(pid >= 0);
    if (pid == 0) _exit(child_crash_script(arg));
    int st = 0;
    CHILD_CHECK(waitpid(pid, &st, 0) == pid);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != CREW__SHM_CRASH_STATUS) {
        fprintf(stderr, "crash point %d: child status %#x, expected exit %d\n", point, st,
                CREW__SHM_CRASH_STATUS);
        return 1;
    }
    /* The next user of the lock repairs the arena. */
    int rc = crew__shm_arena_check();
    if (rc != 0) {
        fprintf(stderr, "after a death at crash point %d the check failed: %d\n", point, rc);
        return 1;
    }
    for (int i = 0; i < MINE; i++)
        if (mine[i] != NULL) CHILD_CHECK(filled(mine[i], 4000, (uint64_t)i + 1));
    /* And it goes on working. */
    for (int round = 0; round < 3; round++) {
        void *p = crew_shm_alloc(3000), *q = crew_shm_alloc(MiB), *r = crew_shm_alloc(64);
        CHILD_CHECK(p != NULL && q != NULL && r != NULL);
        CHILD_CHECK(all_zero(p, 3000) && all_zero(r, 64));
        fill(p, 3000, 99);
        CHILD_RC(crew_shm_free(q), 0);
        CHILD_RC(crew_shm_free(r), 0);
        CHILD_RC(crew_shm_free(p), 0);
        CHILD_RC(crew__shm_arena_check(), 0);
    }
    for (int i = 0; i < MINE; i++)
        if (mine[i] != NULL) CHILD_RC(crew_shm_free(mine[i]), 0);
    CHILD_RC(crew__shm_arena_check(), 0);
    return 0;
}

static void test_arena_owner_death(void **state) {
    (void)state;
    for (int point = 1; point < CREW__SHM_CRASH_COUNT; point++)
        run_fresh(crash_case, (void *)(intptr_t)point);
}

/* ====================================================== named segments */

static void test_segment_basic(void **state) {
    (void)state;
    char name[128], slashed[130];
    seg_name(name, sizeof name, "basic");
    snprintf(slashed, sizeof slashed, "/%s", name);

    crew_shm *a = NULL, *b = NULL, *c = NULL;
    ASSERT_RC(crew_shm_open(&a, name, &(crew_shm_options){.create = true, .size = 10000}), 0);
    assert_non_null(a);
    assert_true(seg_exists(name));
    assert_int_equal(crew_shm_size(a), 10000);
    assert_string_equal(crew_shm_name(a), slashed);
    unsigned char *pa = crew_shm_addr(a);
    assert_non_null(pa);
    assert_true(all_zero(pa, 10000));
    fill(pa, 10000, 5);

    /* Attach, by either spelling, with size 0 or the right size. */
    ASSERT_RC(crew_shm_open(&b, slashed, NULL), 0);
    assert_int_equal(crew_shm_size(b), 10000);
    assert_string_equal(crew_shm_name(b), slashed);
    assert_true(filled(crew_shm_addr(b), 10000, 5));
    ((unsigned char *)crew_shm_addr(b))[0] ^= 1;
    assert_int_equal(pa[0], ((unsigned char *)crew_shm_addr(b))[0]);
    pa[0] ^= 1;
    ASSERT_RC(crew_shm_open(&c, name, &(crew_shm_options){.size = 10000}), 0);
    assert_true(filled(crew_shm_addr(c), 10000, 5));
    crew_shm_close(c);

    /* The wrong size; create of an existing one: attach, or EEXIST. */
    c = (crew_shm *)&c;
    ASSERT_RC(crew_shm_open(&c, name, &(crew_shm_options){.size = 4096}), CREW_EINVAL);
    assert_null(c);
    ASSERT_RC(crew_shm_open(&c, name, &(crew_shm_options){.create = true, .size = 4096}), CREW_EINVAL);
    ASSERT_RC(crew_shm_open(&c, name, &(crew_shm_options){.create = true, .exclusive = true, .size = 10000}),
              CREW_EEXIST);
    assert_null(c);
    ASSERT_RC(crew_shm_open(&c, name, &(crew_shm_options){.create = true, .size = 10000}), 0);
    assert_true(filled(crew_shm_addr(c), 10000, 5));
    crew_shm_close(c);
    assert_true(seg_exists(name)); /* none of those removed it */

    ASSERT_RC(crew_shm_unlink(name), 0);
    assert_false(seg_exists(name));
    /* The mappings outlive the name. */
    assert_true(filled(pa, 10000, 5));
    ASSERT_RC(crew_shm_unlink(name), CREW_ENOENT);
    ASSERT_RC(crew_shm_unlink(slashed), CREW_ENOENT);
    ASSERT_RC(crew_shm_open(&c, name, NULL), CREW_ENOENT);
    ASSERT_RC(crew_shm_open(&c, name, &(crew_shm_options){.size = 10000}), CREW_ENOENT);
    assert_null(c);
    crew_shm_close(a);
    crew_shm_close(b);
    crew_shm_close(NULL);
}

static void test_segment_errors(void **state) {
    (void)state;
    crew_shm *s = NULL;
    crew_shm_options create = {.create = true, .size = 4096};
    ASSERT_RC(crew_shm_open(NULL, "x", &create), CREW_EINVAL);
    ASSERT_RC(crew_shm_open(&s, NULL, &create), CREW_EINVAL);
    const char *bad[] = {"", "/", "a/b", "//x", "/a/", "x/", ".", "/..", "/."};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        s = (crew_shm *)&s;
        int rc = crew_shm_open(&s, bad[i], &create);
        if (rc != CREW_EINVAL || s != NULL) {
            print_error("name \"%s\": %d (%s)\n", bad[i], rc, crew_err_name(rc));
            fail();
        }
        ASSERT_RC(crew_shm_unlink(bad[i]), CREW_EINVAL);
    }
    ASSERT_RC(crew_shm_unlink(NULL), CREW_EINVAL);

    /* The longest name, with and without its slash, and one byte more. */
    char longest[CREW_SHM_NAME_MAX + 3];
    int n = snprintf(longest + 1, CREW_SHM_NAME_MAX + 1, "crew-test-%d-long-", (int)g_runner);
    memset(longest + 1 + n, 'x', CREW_SHM_NAME_MAX - (size_t)n);
    longest[0] = '/';
    longest[CREW_SHM_NAME_MAX + 1] = '\0';
    assert_int_equal(strlen(longest + 1), CREW_SHM_NAME_MAX);
    ASSERT_RC(crew_shm_open(&s, longest + 1, &create), 0);
    assert_string_equal(crew_shm_name(s), longest);
    crew_shm_close(s);
    ASSERT_RC(crew_shm_open(&s, longest, NULL), 0);
    crew_shm_close(s);
    ASSERT_RC(crew_shm_unlink(longest), 0);
    longest[CREW_SHM_NAME_MAX + 1] = 'x';
    longest[CREW_SHM_NAME_MAX + 2] = '\0';
    ASSERT_RC(crew_shm_open(&s, longest, &create), CREW_ENAMETOOLONG);
    ASSERT_RC(crew_shm_open(&s, longest + 1, NULL), CREW_ENAMETOOLONG);
    ASSERT_RC(crew_shm_unlink(longest), CREW_ENAMETOOLONG);

    /* Create with size 0. */
    char name[128];
    seg_name(name, sizeof name, "zero");
    ASSERT_RC(crew_shm_open(&s, name, &(crew_shm_options){.create = true}), CREW_EINVAL);
    assert_false(seg_exists(name));

    /* Accessors of NULL. */
    assert_null(crew_shm_addr(NULL));
    assert_int_equal(crew_shm_size(NULL), 0);
    assert_null(crew_shm_name(NULL));
}

typedef struct pair {
    char name[128];
    int to_child[2], to_parent[2];
} pair;

static int child_attach_by_name(void *arg) {
    pair *p = arg;
    close(p->to_child[1]);
    close(p->to_parent[0]);
    char go;
    CHILD_CHECK(read_all(p->to_child[0], &go, 1));
    crew_shm *s = NULL;
    CHILD_RC(crew_shm_open(&s, p->name, NULL), 0);
    CHILD_CHECK(crew_shm_size(s) == 65536);
    CHILD_CHECK(filled(crew_shm_addr(s), 65536, 11));
    memset(crew_shm_addr(s), 0x77, 100);
    crew_shm_close(s);
    CHILD_CHECK(write_all(p->to_parent[1], &go, 1));
    return 0;
}

/* A process that shares no memory with the creator (it was forked before the
 * segment existed) attaches by name and sees the bytes. */
static void test_segment_other_process(void **state) {
    (void)state;
    pair p;
    seg_name(p.name, sizeof p.name, "other");
    make_pipe(p.to_child);
    make_pipe(p.to_parent);
    pid_t pid = fork_child(child_attach_by_name, &p);
    close(p.to_child[0]);
    close(p.to_parent[1]);
    crew_shm *s = NULL;
    ASSERT_RC(crew_shm_open(&s, p.name, &(crew_shm_options){.create = true, .exclusive = true, .size = 65536}), 0);
    fill(crew_shm_addr(s), 65536, 11);
    char go = 1;
    assert_true(write_all(p.to_child[1], &go, 1));
    assert_true(read_all(p.to_parent[0], &go, 1));
    reap_ok(pid);
    unsigned char *b = crew_shm_addr(s);
    for (int i = 0; i < 100; i++) assert_int_equal(b[i], 0x77);
    memset(b, 0, 100);
    fill(b, 100, 11); /* restore the first bytes: the rest is untouched */
    assert_true(filled(b, 65536, 11));
    crew_shm_close(s);
    ASSERT_RC(crew_shm_unlink(p.name), 0);
    close(p.to_child[1]);
    close(p.to_parent[0]);
}

/* ============================================================= tracker */

/* The tracker is no child of ours, holds none of our descriptors and none of
 * our memory, and has a session of its own. */
static void test_tracker_detached(void **state) {
    (void)state;
    char name[128];
    seg_name(name, sizeof name, "detached");
    int fds[2];
    make_pipe(fds); /* a descriptor the tracker must not keep */
    /* Memory the tracker must not hold on to: arena, heap. */
    size_t big = 32 * MiB;
    unsigned char *block = crew_shm_alloc(big);
    assert_non_null(block);
    memset(block, 1, big);
    unsigned char *heap = malloc(big);
    assert_non_null(heap);
    memset(heap, 1, big);
    assert_int_equal(crew__shm_tracker_pid(), 0);
    crew_shm *s = NULL;
    ASSERT_RC(crew_shm_open(&s, name, &(crew_shm_options){.create = true, .size = 100}), 0);
    pid_t t = crew__shm_tracker_pid();
    assert_true(t > 0);
    assert_true(t != getpid());
    errno = 0;
    assert_int_equal(waitpid(-1, NULL, WNOHANG), -1);
    assert_int_equal(errno, ECHILD);
    assert_false(proc_ended(t));
    assert_int_not_equal(proc_stat_field(t, 4), getpid()); /* its parent */
    assert_int_equal(getsid(t), t);
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/fd", (int)t);
    DIR *d = opendir(path);
    if (d != NULL) { /* needs the same user, which we are */
        int open_fds = 0;
        for (struct dirent *e; (e = readdir(d)) != NULL;)
            if (e->d_name[0] != '.') open_fds++;
        closedir(d);
        assert_int_equal(open_fds, 1);
    }
    free(heap);
    ASSERT_RC(crew_shm_free(block), 0);
    /* Another segment uses the same tracker. */
    char name2[128];
    seg_name(name2, sizeof name2, "detached");
    crew_shm *s2 = NULL;
    ASSERT_RC(crew_shm_open(&s2, name2, &(crew_shm_options){.create = true, .size = 100}), 0);
    assert_int_equal(crew__shm_tracker_pid(), t);
    crew_shm_close(s2);
    ASSERT_RC(crew_shm_unlink(name2), 0);
    crew_shm_close(s);
    ASSERT_RC(crew_shm_unlink(name), 0);
    close(fds[0]);
    close(fds[1]);
}

typedef struct report {
    char name[128], persist[128];
    pid_t tracker;
    int to_parent[2];
} report;

static int child_create_and_hang(void *arg) {
    report *r = arg;
    close(r->to_parent[0]);
    crew_shm *s = NULL;
    CHILD_RC(crew_shm_open(&s, r->name, &(crew_shm_options){.create = true, .size = 4096}), 0);
    pid_t t = crew__shm_tracker_pid();
    CHILD_CHECK(write_all(r->to_parent[1], &t, sizeof t));
    for (;;) pause(); /* until SIGKILL */
}

/* SIGKILL leaves nothing behind: the tracker sees the family gone. */
static void test_tracker_sigkill(void **state) {
    (void)state;
    report r;
    seg_name(r.name, sizeof r.name, "killed");
    make_pipe(r.to_parent);
    pid_t pid = fork_child(child_create_and_hang, &r);
    close(r.to_parent[1]);
    pid_t t = 0;
    assert_true(read_all(r.to_parent[0], &t, sizeof t));
    close(r.to_parent[0]);
    assert_true(t > 0);
    assert_true(seg_exists(r.name));
    assert_int_equal(kill(pid, SIGKILL), 0);
    int st = reap(pid);
    assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    assert_true(TEST_WAIT_UNTIL(!seg_exists(r.name), GONE_WAIT));
    assert_true(TEST_WAIT_UNTIL(proc_ended(t), GONE_WAIT));
}

static int child_create_and_exit(void *arg) {
    report *r = arg;
    crew_shm *s = NULL;
    CHILD_RC(crew_shm_open(&s, r->name, &(crew_shm_options){.create = true, .size = 4096}), 0);
    if (r->persist[0] != '\0') {
        crew_shm *p = NULL;
        CHILD_RC(crew_shm_open(&p, r->persist, &(crew_shm_options){.create = true, .persist = true, .size = 4096}), 0);
        memset(crew_shm_addr(p), 0x42, 4096);
    }
    return 0; /* exit without unlink or close */
}

static void test_tracker_exit(void **state) {
    (void)state;
    report r = {0};
    seg_name(r.name, sizeof r.name, "exited");
    reap_ok(fork_child(child_create_and_exit, &r));
    assert_true(TEST_WAIT_UNTIL(!seg_exists(r.name), GONE_WAIT));
}

/* A persistent segment outlives the family (whose tracker has finished: the
 * non-persistent one made alongside is gone). */
static void test_tracker_persist(void **state) {
    (void)state;
    report r = {0};
    seg_name(r.name, sizeof r.name, "transient");
    seg_name(r.persist, sizeof r.persist, "persist");
    reap_ok(fork_child(child_create_and_exit, &r));
    assert_true(TEST_WAIT_UNTIL(!seg_exists(r.name), GONE_WAIT));
    assert_true(seg_exists(r.persist));
    crew_shm *p = NULL;
    ASSERT_RC(crew_shm_open(&p, r.persist, NULL), 0);
    assert_int_equal(((unsigned char *)crew_shm_addr(p))[4095], 0x42);
    crew_shm_close(p);
    ASSERT_RC(crew_shm_unlink(r.persist), 0);
}

static int child_unlink_then_persist(void *arg) {
    report *r = arg;
    crew_shm *s = NULL;
    /* Created (tracked), unlinked (untracked), created again to persist:
     * the tracker must leave the second one alone. */
    CHILD_RC(crew_shm_open(&s, r->persist, &(crew_shm_options){.create = true, .size = 4096}), 0);
    crew_shm_close(s);
    CHILD_RC(crew_shm_unlink(r->persist), 0);
    CHILD_RC(crew_shm_open(&s, r->persist, &(crew_shm_options){.create = true, .persist = true, .size = 4096}), 0);
    crew_shm_close(s);
    /* A create that attaches to an existing segment does not track it. */
    CHILD_RC(crew_shm_open(&s, r->persist, &(crew_shm_options){.create = true, .size = 4096}), 0);
    crew_shm_close(s);
    CHILD_RC(crew_shm_open(&s, r->name, &(crew_shm_options){.create = true, .size = 4096}), 0);
    crew_shm_close(s);
    return 0;
}

static void test_tracker_unlink_untracks(void **state) {
    (void)state;
    report r = {0};
    seg_name(r.name, sizeof r.name, "marker");
    seg_name(r.persist, sizeof r.persist, "reborn");
    reap_ok(fork_child(child_unlink_then_persist, &r));
    assert_true(TEST_WAIT_UNTIL(!seg_exists(r.name), GONE_WAIT));
    assert_true(seg_exists(r.persist));
    ASSERT_RC(crew_shm_unlink(r.persist), 0);
}

typedef struct family {
    char first[128], second[128];
} family;

static int grandchild_creates(void *arg) {
    family *f = arg;
    pid_t inherited = crew__shm_tracker_pid();
    CHILD_CHECK(inherited > 0);
    crew_shm *s = NULL;
    CHILD_RC(crew_shm_open(&s, f->second, &(crew_shm_options){.create = true, .size = 4096}), 0);
    CHILD_CHECK(crew__shm_tracker_pid() == inherited); /* the parent's tracker */
    return 0;
}

static int child_family(void *arg) {
    family *f = arg;
    crew_shm *s = NULL;
    CHILD_RC(crew_shm_open(&s, f->first, &(crew_shm_options){.create = true, .size = 4096}), 0);
    pid_t t = crew__shm_tracker_pid();
    fflush(NULL);
    pid_t pid = fork();
    CHILD_CHECK(pid >= 0);
    if (pid == 0) _exit(grandchild_creates(f));
    int st = 0;
    CHILD_CHECK(waitpid(pid, &st, 0) == pid);
    CHILD_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    /* The grandchild is gone but this process, of the same family, is not. */
    CHILD_CHECK(seg_exists(f->second));
    CHILD_CHECK(!proc_ended(t));
    crew_shm_close(s);
    return 0;
}

/* A forked child registers with its parent's tracker; the names go when the
 * last of the family does. */
static void test_tracker_family(void **state) {
    (void)state;
    family f;
    seg_name(f.first, sizeof f.first, "family");
    seg_name(f.second, sizeof f.second, "family");
    reap_ok(fork_child(child_family, &f));
    assert_true(TEST_WAIT_UNTIL(!seg_exists(f.first) && !seg_exists(f.second), GONE_WAIT));
}

static int child_tracker_killed(void *arg) {
    report *r = arg;
    crew_shm *s = NULL;
    CHILD_RC(crew_shm_open(&s, r->persist, &(crew_shm_options){.create = true, .size = 4096}), 0);
    crew_shm_close(s);
    pid_t t1 = crew__shm_tracker_pid();
    CHILD_CHECK(t1 > 0 && kill(t1, SIGKILL) == 0);
    CHILD_CHECK(TEST_WAIT_UNTIL(proc_ended(t1), GONE_WAIT));
    /* Its names are lost (the first segment stays), but the next create
     * starts a new tracker, which does its job at exit. */
    CHILD_CHECK(seg_exists(r->persist));
    CHILD_RC(crew_shm_unlink(r->persist), 0);
    CHILD_RC(crew_shm_open(&s, r->name, &(crew_shm_options){.create = true, .size = 4096}), 0);
    crew_shm_close(s);
    pid_t t2 = crew__shm_tracker_pid();
    CHILD_CHECK(t2 > 0 && t2 != t1);
    return 0;
}

static void test_tracker_restart(void **state) {
    (void)state;
    report r = {0};
    seg_name(r.name, sizeof r.name, "restarted");
    seg_name(r.persist, sizeof r.persist, "orphaned");
    reap_ok(fork_child(child_tracker_killed, &r));
    assert_true(TEST_WAIT_UNTIL(!seg_exists(r.name), GONE_WAIT));
    assert_false(seg_exists(r.persist));
}

static bool is_dev_null(int fd) {
    struct stat a, b;
    return fstat(fd, &a) == 0 && stat("/dev/null", &b) == 0 && a.st_rdev == b.st_rdev &&
           S_ISCHR(a.st_mode);
}

static int child_closes_descriptors(void *arg) {
    report *r = arg;
    crew_shm *s = NULL;
    CHILD_RC(crew_shm_open(&s, r->persist, &(crew_shm_options){.create = true, .size = 4096}), 0);
    crew_shm_close(s);
    pid_t t1 = crew__shm_tracker_pid();
    /* Close everything but stdio, as a daemon might, and reuse the numbers:
     * the family's last copy of the tracker's socket is gone, so the tracker
     * cleans up at once. */
    for (int fd = 3; fd < 1024; fd++) close(fd);
    int nulls[8];
    for (int i = 0; i < 8; i++) CHILD_CHECK((nulls[i] = open("/dev/null", O_RDWR)) >= 0);
    CHILD_CHECK(TEST_WAIT_UNTIL(!seg_exists(r->persist), GONE_WAIT));
    CHILD_CHECK(TEST_WAIT_UNTIL(proc_ended(t1), GONE_WAIT));
    /* The next create starts a tracker on a new descriptor and leaves the
     * program's own descriptors alone. */
    CHILD_RC(crew_shm_open(&s, r->name, &(crew_shm_options){.create = true, .size = 4096}), 0);
    crew_shm_close(s);
    CHILD_CHECK(crew__shm_tracker_pid() > 0 && crew__shm_tracker_pid() != t1);
    for (int i = 0; i < 8; i++) CHILD_CHECK(is_dev_null(nulls[i]));
    return 0;
}

static void test_tracker_descriptor_closed(void **state) {
    (void)state;
    report r = {0};
    seg_name(r.name, sizeof r.name, "second");
    seg_name(r.persist, sizeof r.persist, "first");
    reap_ok(fork_child(child_closes_descriptors, &r));
    assert_true(TEST_WAIT_UNTIL(!seg_exists(r.name), GONE_WAIT));
}

/* Many threads create segments at once, racing to start the tracker. */
enum { CREATORS = 6, PER_CREATOR = 10 };

typedef struct creator {
    pthread_t th;
    int id;
    char names[PER_CREATOR][128];
    int failures;
} creator;

static void *creator_main(void *p) {
    creator *c = p;
    for (int i = 0; i < PER_CREATOR; i++) {
        crew_shm *s = NULL;
        if (crew_shm_open(&s, c->names[i], &(crew_shm_options){.create = true, .size = 4096}) != 0) {
            c->failures++;
            continue;
        }
        memset(crew_shm_addr(s), c->id, 4096);
        crew_shm_close(s);
    }
    return NULL;
}

static int child_creators(void *arg) {
    creator *c = arg;
    for (int i = 0; i < CREATORS; i++)
        CHILD_CHECK(pthread_create(&c[i].th, NULL, creator_main, &c[i]) == 0);
    for (int i = 0; i < CREATORS; i++) {
        CHILD_CHECK(pthread_join(c[i].th, NULL) == 0);
        CHILD_CHECK(c[i].failures == 0);
    }
    CHILD_CHECK(crew__shm_tracker_pid() > 0);
    for (int i = 0; i < CREATORS; i++)
        for (int j = 0; j < PER_CREATOR; j++) CHILD_CHECK(seg_exists(c[i].names[j]));
    errno = 0;
    CHILD_CHECK(waitpid(-1, NULL, WNOHANG) == -1 && errno == ECHILD);
    return 0;
}

static void test_tracker_threads(void **state) {
    (void)state;
    static creator c[CREATORS];
    for (int i = 0; i < CREATORS; i++) {
        c[i] = (creator){.id = i};
        for (int j = 0; j < PER_CREATOR; j++) seg_name(c[i].names[j], sizeof c[i].names[j], "thread");
    }
    reap_ok(fork_child(child_creators, c));
    for (int i = 0; i < CREATORS; i++)
        for (int j = 0; j < PER_CREATOR; j++)
            assert_true(TEST_WAIT_UNTIL(!seg_exists(c[i].names[j]), GONE_WAIT));
}

/* The tracker started from a thread with a small stack (its frames live
 * on that stack until it unmaps what it does not need). */
static int child_small_stack(void *arg) {
    creator *c = arg;
    pthread_attr_t attr;
    CHILD_CHECK(pthread_attr_init(&attr) == 0);
    CHILD_CHECK(pthread_attr_setstacksize(&attr, 64 * KiB) == 0);
    CHILD_CHECK(pthread_create(&c->th, &attr, creator_main, c) == 0);
    pthread_attr_destroy(&attr);
    CHILD_CHECK(pthread_join(c->th, NULL) == 0);
    CHILD_CHECK(c->failures == 0);
    for (int j = 0; j < PER_CREATOR; j++) CHILD_CHECK(seg_exists(c->names[j]));
    return 0;
}

static void test_tracker_small_stack(void **state) {
    (void)state;
    static creator c;
    c = (creator){.id = 1};
    for (int j = 0; j < PER_CREATOR; j++) seg_name(c.names[j], sizeof c.names[j], "small");
    reap_ok(fork_child(child_small_stack, &c));
    for (int j = 0; j < PER_CREATOR; j++) assert_true(TEST_WAIT_UNTIL(!seg_exists(c.names[j]), GONE_WAIT));
}

/* ================================================================== main */

/* Names of this run still in /dev/shm; prints them. */
static int leftover_names(bool print) {
    char prefix[64];
    int n = snprintf(prefix, sizeof prefix, "crew-test-%d-", (int)g_runner);
    DIR *d = opendir("/dev/shm");
    if (d == NULL) return 0;
    int count = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        if (strncmp(e->d_name, prefix, (size_t)n) != 0) continue;
        if (print) fprintf(stderr, "left behind: /dev/shm/%s\n", e->d_name);
        count++;
    }
    closedir(d);
    return count;
}

/* Trackers of the tests' families may still be at work: give them time. */
static bool no_leftover_names(void) {
    if (TEST_WAIT_UNTIL(leftover_names(false) == 0, GONE_WAIT)) return true;
    leftover_names(true);
    return false;
}

/* Each test runs in a process of its own (see test_run_forked_check), so
 * each starts without an arena or a tracker. */
int main(void) {
    g_runner = getpid();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_arena_before_setup),
        cmocka_unit_test(test_arena_basic),
        cmocka_unit_test(test_arena_zeroed_reuse),
        cmocka_unit_test(test_arena_random),
        cmocka_unit_test(test_arena_threads),
        cmocka_unit_test(test_arena_processes),
        cmocka_unit_test(test_arena_killed_children),
        cmocka_unit_test(test_arena_fork_shares),
        cmocka_unit_test(test_arena_after_fork_visible),
        cmocka_unit_test(test_arena_child_allocs_parent_frees),
        cmocka_unit_test(test_arena_large),
        cmocka_unit_test(test_arena_reserve_exhausted),
        cmocka_unit_test(test_arena_env_reserve),
        cmocka_unit_test(test_arena_address_limit),
        cmocka_unit_test(test_parse_size),
        cmocka_unit_test(test_arena_owner_death),
        cmocka_unit_test(test_segment_basic),
        cmocka_unit_test(test_segment_errors),
        cmocka_unit_test(test_segment_other_process),
        cmocka_unit_test(test_tracker_detached),
        cmocka_unit_test(test_tracker_sigkill),
        cmocka_unit_test(test_tracker_exit),
        cmocka_unit_test(test_tracker_persist),
        cmocka_unit_test(test_tracker_unlink_untracks),
        cmocka_unit_test(test_tracker_family),
        cmocka_unit_test(test_tracker_restart),
        cmocka_unit_test(test_tracker_descriptor_closed),
        cmocka_unit_test(test_tracker_threads),
        cmocka_unit_test(test_tracker_small_stack),
    };
    return test_run_forked_check("test_shm", tests, sizeof tests / sizeof tests[0],
                                 "no segment left behind", no_leftover_names);
}
