/* crew_cpu_count: the affinity mask, lowered to the cgroup CPU quota,
 * overridden by CREW_CPU_COUNT. Reads files only; keeps no state. */
#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cpu_count.h"
#include "crew/thread.h"

/* ceil(q / p) for positive q and p, without overflow. */
static long ceil_div(long q, long p) { return q / p + (q % p != 0); }

/* ceil(quota / period) from one cgroup directory, or 0 for no limit. */
static long read_limit_v2(const char *dir) {
    char path[PATH_MAX], quota[32];
    long period;
    if (snprintf(path, sizeof path, "%s/cpu.max", dir) >= (int)sizeof path) return 0;
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    int n = fscanf(f, "%31s %ld", quota, &period);
    fclose(f);
    if (n != 2 || strcmp(quota, "max") == 0 || period <= 0) return 0;
    long q = strtol(quota, NULL, 10);
    return q > 0 ? ceil_div(q, period) : 0;
}

static long read_long(const char *dir, const char *name) {
    char path[PATH_MAX];
    long v;
    if (snprintf(path, sizeof path, "%s/%s", dir, name) >= (int)sizeof path) return -1;
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    int n = fscanf(f, "%ld", &v);
    fclose(f);
    return n == 1 ? v : -1;
}

static long read_limit_v1(const char *dir) {
    long quota = read_long(dir, "cpu.cfs_quota_us");
    long period = read_long(dir, "cpu.cfs_period_us");
    if (quota <= 0 || period <= 0) return 0;
    return ceil_div(quota, period);
}

/* The tightest limit in `base`/`cgpath` and each of its ancestors up to
 * `base` itself (a quota set on a parent cgroup binds its children too). */
static long tightest(const char *base, const char *cgpath, long (*read)(const char *)) {
    char dir[PATH_MAX];
    long best = 0;
    if (snprintf(dir, sizeof dir, "%s%s", base, cgpath) >= (int)sizeof dir) return 0;
    size_t base_len = strlen(base);
    for (;;) {
        long v = read(dir);
        if (v > 0 && (best == 0 || v < best)) best = v;
        char *slash = strrchr(dir + base_len, '/');
        if (slash == NULL) break;
        *slash = '\0';
    }
    return best;
}

static bool has_cpu_controller(const char *controllers) {
    char buf[256];
    snprintf(buf, sizeof buf, "%s", controllers);
    char *save = NULL;
    for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
        if (strcmp(tok, "cpu") == 0) return true;
    return false;
}

int crew__cgroup_cpu_limit(const char *proc_cgroup, const char *cgroup_root) {
    FILE *f = fopen(proc_cgroup, "r");
    if (!f) return 0;
    char line[PATH_MAX + 128];
    long best = 0;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = '\0';
        char *c1 = strchr(line, ':');
        char *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!c2) continue;
        *c1 = *c2 = '\0';
        const char *controllers = c1 + 1, *cgpath = c2 + 1;
        if (strcmp(cgpath, "/") == 0) cgpath = "";
        char base[PATH_MAX];
        long v = 0;
        if (strcmp(line, "0") == 0 && *controllers == '\0') {
            v = tightest(cgroup_root, cgpath, read_limit_v2);
        } else if (has_cpu_controller(controllers)) {
            snprintf(base, sizeof base, "%s/%s", cgroup_root, controllers);
            v = tightest(base, cgpath, read_limit_v1);
            if (v == 0) {
                snprintf(base, sizeof base, "%s/cpu", cgroup_root);
                v = tightest(base, cgpath, read_limit_v1);
            }
        }
        if (v > 0 && (best == 0 || v < best)) best = v;
    }
    fclose(f);
    return best > INT_MAX ? INT_MAX : (int)best;
}

static int affinity_count(void) {
    for (size_t ncpu = 1024; ncpu <= (1u << 20); ncpu *= 2) {
        size_t size = CPU_ALLOC_SIZE(ncpu);
        cpu_set_t *set = CPU_ALLOC(ncpu);
        if (!set) break;
        CPU_ZERO_S(size, set);
        if (sched_getaffinity(0, size, set) == 0) {
            int n = CPU_COUNT_S(size, set);
            CPU_FREE(set);
            return n;
        }
        CPU_FREE(set);
        if (errno != EINVAL) break;
    }
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

int crew_cpu_count(void) {
    const char *env = getenv("CREW_CPU_COUNT");
    if (env && *env) {
        char *end;
        long v = strtol(env, &end, 10);
        if (*end == '\0' && v > 0 && v <= INT_MAX) return (int)v;
    }
    int n = affinity_count();
    int limit = crew__cgroup_cpu_limit("/proc/self/cgroup", "/sys/fs/cgroup");
    if (limit > 0 && limit < n) n = limit;
    return n > 0 ? n : 1;
}
