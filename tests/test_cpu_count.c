/* Tests for crew_cpu_count: bounded by the affinity mask, follows
 * sched_setaffinity, the CREW_CPU_COUNT override, and the cgroup quota
 * reader (crew__cgroup_cpu_limit) on fake cgroup trees. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <sched.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "cpu_count.h"
#include "crew/thread.h"

static int affinity_cpus(void) {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) != 0)
        return -1;
    return CPU_COUNT(&set);
}

static void test_count_within_affinity(void **state) {
    (void)state;
    unsetenv("CREW_CPU_COUNT");
    int n = crew_cpu_count();
    int aff = affinity_cpus();
    assert_true(aff >= 1);
    assert_true(n >= 1);
    assert_true(n <= aff);
}

/* In a child, so the test process keeps its mask. Exit codes: 0 pass,
 * 1..9 which check failed. */
static void test_count_follows_affinity(void **state) {
    (void)state;
    unsetenv("CREW_CPU_COUNT");
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        if (sched_getaffinity(0, sizeof set, &set) != 0)
            _exit(1);
        int first = -1, second = -1;
        for (int c = 0; c < CPU_SETSIZE; c++) {
            if (CPU_ISSET(c, &set)) {
                if (first < 0)
                    first = c;
                else if (second < 0)
                    second = c;
            }
        }
        if (first < 0)
            _exit(2);
        cpu_set_t one;
        CPU_ZERO(&one);
        CPU_SET(first, &one);
        if (sched_setaffinity(0, sizeof one, &one) != 0)
            _exit(3);
        if (crew_cpu_count() != 1)
            _exit(4);
        /* Read afresh on each call: widening the mask again is seen. */
        if (second >= 0) {
            CPU_SET(second, &one);
            if (sched_setaffinity(0, sizeof one, &one) != 0)
                _exit(5);
            int n = crew_cpu_count();
            if (n < 1 || n > 2)
                _exit(6);
        }
        /* The override beats the mask. */
        if (setenv("CREW_CPU_COUNT", "5", 1) != 0)
            _exit(7);
        if (crew_cpu_count() != 5)
            _exit(8);
        _exit(0);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

static void test_env_override(void **state) {
    (void)state;
    unsetenv("CREW_CPU_COUNT");
    int base = crew_cpu_count();
    assert_true(base >= 1);

    assert_int_equal(setenv("CREW_CPU_COUNT", "3", 1), 0);
    assert_int_equal(crew_cpu_count(), 3);
    assert_int_equal(setenv("CREW_CPU_COUNT", "1", 1), 0);
    assert_int_equal(crew_cpu_count(), 1);
    /* It overrides the mask and quota, even above them. */
    assert_int_equal(setenv("CREW_CPU_COUNT", "64", 1), 0);
    assert_int_equal(crew_cpu_count(), 64);

    /* Not a positive integer: ignored. */
    const char *bad[] = { "0", "abc", "-2", "", " ", "3abc", "1.5" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(setenv("CREW_CPU_COUNT", bad[i], 1), 0);
        int n = crew_cpu_count();
        if (n != base)
            fail_msg("CREW_CPU_COUNT=\"%s\" gave %d, expected it ignored (%d)", bad[i], n,
                     base);
    }
    assert_int_equal(unsetenv("CREW_CPU_COUNT"), 0);
    assert_int_equal(crew_cpu_count(), base);
}

/* ----------------------------------------------------- fake cgroup trees */

typedef struct cg_fixture {
    char dir[64];       /* the mkdtemp directory */
    char root[128];     /* dir/root: the cgroup mount point */
    char proc[128];     /* dir/cgroup: the /proc/self/cgroup stand-in */
} cg_fixture;

static int setup_tree(void **state) {
    cg_fixture *f = calloc(1, sizeof *f);
    if (!f)
        return -1;
    snprintf(f->dir, sizeof f->dir, "/tmp/crew-cgroup-XXXXXX");
    if (!mkdtemp(f->dir)) {
        free(f);
        return -1;
    }
    snprintf(f->root, sizeof f->root, "%s/root", f->dir);
    snprintf(f->proc, sizeof f->proc, "%s/cgroup", f->dir);
    if (mkdir(f->root, 0700) != 0) {
        rmdir(f->dir);
        free(f);
        return -1;
    }
    *state = f;
    return 0;
}

static int remove_entry(const char *path, const struct stat *sb, int type, struct FTW *ftw) {
    (void)sb;
    (void)type;
    (void)ftw;
    return remove(path);
}

static int teardown_tree(void **state) {
    cg_fixture *f = *state;
    int rc = nftw(f->dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    struct stat st;
    int gone = stat(f->dir, &st) != 0 && errno == ENOENT;
    free(f);
    return rc == 0 && gone ? 0 : -1;
}

/* Write `text` to root-relative `rel` (creating directories on the way). */
static void put_file(const char *base, const char *rel, const char *text) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", base, rel);
    for (char *p = path + strlen(base) + 1; *p; p++) {
        if (*p == '/') {
            *p = '\0';
            if (mkdir(path, 0700) != 0 && errno != EEXIST)
                fail_msg("mkdir %s: %s", path, strerror(errno));
            *p = '/';
        }
    }
    FILE *fp = fopen(path, "w");
    if (!fp)
        fail_msg("fopen %s: %s", path, strerror(errno));
    fputs(text, fp);
    assert_int_equal(fclose(fp), 0);
}

static void put_proc(cg_fixture *f, const char *text) {
    FILE *fp = fopen(f->proc, "w");
    assert_non_null(fp);
    fputs(text, fp);
    assert_int_equal(fclose(fp), 0);
}

static int limit(cg_fixture *f) {
    return crew__cgroup_cpu_limit(f->proc, f->root);
}

static void test_cg_v2_quota(void **state) {
    cg_fixture *f = *state;
    put_proc(f, "0::/a/b\n");
    put_file(f->root, "a/b/cpu.max", "150000 100000\n");
    assert_int_equal(limit(f), 2);
    /* Exact multiple and tiny quotas round up, never to 0. */
    put_file(f->root, "a/b/cpu.max", "300000 100000\n");
    assert_int_equal(limit(f), 3);
    put_file(f->root, "a/b/cpu.max", "100001 100000\n");
    assert_int_equal(limit(f), 2);
    put_file(f->root, "a/b/cpu.max", "1000 100000\n");
    assert_int_equal(limit(f), 1);
    /* No trailing newline. */
    put_file(f->root, "a/b/cpu.max", "450000 100000");
    assert_int_equal(limit(f), 5);
}

static void test_cg_v2_max(void **state) {
    cg_fixture *f = *state;
    put_proc(f, "0::/a/b\n");
    put_file(f->root, "a/b/cpu.max", "max 100000\n");
    assert_int_equal(limit(f), 0);
}

static void test_cg_v2_parent_tighter(void **state) {
    cg_fixture *f = *state;
    put_proc(f, "0::/a/b\n");
    put_file(f->root, "a/b/cpu.max", "150000 100000\n");
    put_file(f->root, "a/cpu.max", "100000 100000\n");
    assert_int_equal(limit(f), 1);
    /* The smallest along the path: now the leaf is tighter. */
    put_file(f->root, "a/cpu.max", "400000 100000\n");
    put_file(f->root, "a/b/cpu.max", "250000 100000\n");
    assert_int_equal(limit(f), 3);
    /* The parent limits even when the leaf has none. */
    put_file(f->root, "a/b/cpu.max", "max 100000\n");
    assert_int_equal(limit(f), 4);
}

/* In a container with its own cgroup namespace the path is "/" and the
 * limit sits in the mount point itself. */
static void test_cg_v2_root(void **state) {
    cg_fixture *f = *state;
    put_proc(f, "0::/\n");
    put_file(f->root, "cpu.max", "200000 100000\n");
    assert_int_equal(limit(f), 2);
}

static void test_cg_v1_quota(void **state) {
    cg_fixture *f = *state;
    put_proc(f, "3:cpu,cpuacct:/x\n");
    put_file(f->root, "cpu,cpuacct/x/cpu.cfs_quota_us", "250000\n");
    put_file(f->root, "cpu,cpuacct/x/cpu.cfs_period_us", "100000\n");
    /* Real systems mount "cpu,cpuacct" and link "cpu" to it; provide both so
     * either lookup is right. */
    char target[256], link[256];
    snprintf(target, sizeof target, "%s/cpu,cpuacct", f->root);
    snprintf(link, sizeof link, "%s/cpu", f->root);
    assert_int_equal(symlink(target, link), 0);
    assert_int_equal(limit(f), 3);

    put_file(f->root, "cpu,cpuacct/x/cpu.cfs_quota_us", "-1\n");
    assert_int_equal(limit(f), 0);
}

static void test_cg_v1_cpu_only_hierarchy(void **state) {
    cg_fixture *f = *state;
    /* Other controllers first, as /proc/self/cgroup lists them. */
    put_proc(f, "12:memory:/m\n4:pids:/p\n1:cpu:/y/z\n0::/\n");
    put_file(f->root, "cpu/y/z/cpu.cfs_quota_us", "200000\n");
    put_file(f->root, "cpu/y/z/cpu.cfs_period_us", "100000\n");
    assert_int_equal(limit(f), 2);
    /* A parent's tighter quota wins. */
    put_file(f->root, "cpu/y/cpu.cfs_quota_us", "50000\n");
    put_file(f->root, "cpu/y/cpu.cfs_period_us", "100000\n");
    assert_int_equal(limit(f), 1);
}

static void test_cg_missing(void **state) {
    cg_fixture *f = *state;
    char nowhere[256];
    snprintf(nowhere, sizeof nowhere, "%s/no-such-file", f->dir);
    /* No /proc/self/cgroup. */
    assert_int_equal(crew__cgroup_cpu_limit(nowhere, f->root), 0);
    /* A cgroup with no cpu.max anywhere on its path. */
    put_proc(f, "0::/a/b\n");
    assert_int_equal(limit(f), 0);
    assert_int_equal(crew__cgroup_cpu_limit(f->proc, nowhere), 0);
    /* v1 with the quota but no period. */
    put_proc(f, "3:cpu,cpuacct:/x\n");
    put_file(f->root, "cpu,cpuacct/x/cpu.cfs_quota_us", "250000\n");
    assert_int_equal(limit(f), 0);
    /* An empty proc file. */
    put_proc(f, "");
    assert_int_equal(limit(f), 0);
}

static void test_cg_malformed(void **state) {
    cg_fixture *f = *state;
    put_proc(f, "0::/a\n");
    const char *bad[] = { "garbage\n", "\n", "150000\n", "150000 0\n", "0 100000\n",
                          "-5 100000\n", "150000 abc\n" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        put_file(f->root, "a/cpu.max", bad[i]);
        int n = limit(f);
        if (n != 0)
            fail_msg("cpu.max \"%s\" gave %d, expected 0", bad[i], n);
    }
}

/* Absurd values the kernel would never write must not overflow (UBSan) or
 * produce a negative count. */
static void test_cg_huge_values(void **state) {
    cg_fixture *f = *state;
    put_proc(f, "0::/a\n");
    put_file(f->root, "a/cpu.max", "9223372036854775807 100000\n");
    int n = limit(f);
    assert_true(n == 0 || n == INT_MAX);
    put_file(f->root, "a/cpu.max", "9223372036854775807 9223372036854775807\n");
    assert_int_equal(limit(f), 1);
    put_file(f->root, "a/cpu.max", "99999999999999999999999 100000\n");
    n = limit(f);
    assert_true(n == 0 || n == INT_MAX);

    put_proc(f, "3:cpu,cpuacct:/x\n");
    put_file(f->root, "cpu,cpuacct/x/cpu.cfs_quota_us", "9223372036854775807\n");
    put_file(f->root, "cpu,cpuacct/x/cpu.cfs_period_us", "100000\n");
    n = limit(f);
    assert_true(n == 0 || n == INT_MAX);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_count_within_affinity),
        cmocka_unit_test(test_count_follows_affinity),
        cmocka_unit_test(test_env_override),
        cmocka_unit_test_setup_teardown(test_cg_v2_quota, setup_tree, teardown_tree),
        cmocka_unit_test_setup_teardown(test_cg_v2_max, setup_tree, teardown_tree),
        cmocka_unit_test_setup_teardown(test_cg_v2_parent_tighter, setup_tree, teardown_tree),
        cmocka_unit_test_setup_teardown(test_cg_v2_root, setup_tree, teardown_tree),
        cmocka_unit_test_setup_teardown(test_cg_v1_quota, setup_tree, teardown_tree),
        cmocka_unit_test_setup_teardown(test_cg_v1_cpu_only_hierarchy, setup_tree,
                                        teardown_tree),
        cmocka_unit_test_setup_teardown(test_cg_missing, setup_tree, teardown_tree),
        cmocka_unit_test_setup_teardown(test_cg_malformed, setup_tree, teardown_tree),
        cmocka_unit_test_setup_teardown(test_cg_huge_values, setup_tree, teardown_tree),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
