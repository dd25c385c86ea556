/* The `crew` command: facts about the library and the machine it runs on.
 *
 *   crew info      version, CPUs crew will use, and where that number came from
 *   crew version   the linked library's version
 *   crew help      usage
 *
 * Single-threaded; it only reads. More subcommands (demo, bench) come later:
 * add a row to `commands` below.
 */
#define _GNU_SOURCE /* sched_getaffinity, CPU_COUNT_S */
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <crew.h>

/* The tool is part of crew, so it may use the internal cgroup reader that
 * crew_cpu_count itself uses; it links the static library, where that symbol
 * is visible. */
#include "../src/cpu_count.h"

/* CPUs in this process's affinity mask, or 0 if it cannot be read. The mask
 * is grown until the kernel accepts it, so machines with more than
 * CPU_SETSIZE CPUs are counted right. */
static int affinity_cpu_count(void) {
    for (int ncpu = 1024; ncpu <= (1 << 20); ncpu *= 2) {
        cpu_set_t *set = CPU_ALLOC(ncpu);
        if (set == NULL)
            return 0;
        size_t size = CPU_ALLOC_SIZE(ncpu);
        CPU_ZERO_S(size, set);
        if (sched_getaffinity(0, size, set) == 0) {
            int n = CPU_COUNT_S(size, set);
            CPU_FREE(set);
            return n;
        }
        int err = errno;
        CPU_FREE(set);
        if (err != EINVAL)
            return 0;
    }
    return 0;
}

/* CREW_CPU_COUNT as crew_cpu_count reads it: a positive integer, else 0. */
static long env_cpu_count(const char **raw) {
    const char *s = getenv("CREW_CPU_COUNT");
    *raw = s;
    if (s == NULL || *s == '\0')
        return 0;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || *end != '\0' || v <= 0)
        return 0;
    return v;
}

static int cmd_version(void) {
    printf("crew %s\n", crew_version());
    return 0;
}

static int cmd_info(void) {
    int cpus = crew_cpu_count();
    int affinity = affinity_cpu_count();
    int quota = crew__cgroup_cpu_limit("/proc/self/cgroup", "/sys/fs/cgroup");
    const char *raw;
    long env = env_cpu_count(&raw);

    printf("crew %s (built with headers %s)\n", crew_version(), CREW_VERSION_STRING);
    printf("cpu count:        %d\n", cpus);
    if (affinity > 0)
        printf("affinity cpus:    %d\n", affinity);
    else
        printf("affinity cpus:    unknown\n");
    if (quota > 0)
        printf("cgroup cpu quota: %d (rounded up)\n", quota);
    else
        printf("cgroup cpu quota: none\n");
    if (raw != NULL)
        printf("CREW_CPU_COUNT:   %s%s\n", raw, env > 0 ? "" : " (ignored: not a positive integer)");
    else
        printf("CREW_CPU_COUNT:   unset\n");

    const char *why;
    if (env > 0 && cpus == env)
        why = "set by CREW_CPU_COUNT";
    else if (quota > 0 && affinity > 0 && quota < affinity && cpus == quota)
        why = "lowered by the cgroup CPU quota";
    else if (affinity > 0 && cpus == affinity)
        why = "the affinity mask";
    else
        why = "see crew_cpu_count in crew/thread.h";
    printf("cpu count from:   %s\n", why);
    return 0;
}

static void usage(FILE *to) {
    fprintf(to,
            "usage: crew <command>\n"
            "\n"
            "commands:\n"
            "  info      version, CPUs crew will use and why\n"
            "  version   the library's version\n"
            "  help      this text\n");
}

static int cmd_help(void) {
    usage(stdout);
    return 0;
}

static const struct {
    const char *name;
    int (*run)(void);
} commands[] = {
    {"info", cmd_info},
    {"version", cmd_version},
    {"--version", cmd_version},
    {"help", cmd_help},
    {"--help", cmd_help},
    {"-h", cmd_help},
};

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        if (strcmp(argv[1], commands[i].name) == 0) {
            if (argc > 2) {
                fprintf(stderr, "crew %s: unexpected argument '%s'\n", argv[1], argv[2]);
                return 2;
            }
            return commands[i].run() == 0 ? 0 : 1;
        }
    }
    fprintf(stderr, "crew: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
