/* The command line and run header shared by bench_pool and bench_proc:
 *   <prog> [--quick] [--workers N] [section...]
 * (sections named: only those run; none named: all of them), and the
 * defaults of what bench/CMakeLists.txt defines for them. */
#ifndef CREW_BENCH_CLI_H
#define CREW_BENCH_CLI_H

#ifndef CREW_BENCH_BUILD_TYPE
#define CREW_BENCH_BUILD_TYPE "unknown"
#endif
#ifndef CREW_BENCH_PYDIR
#define CREW_BENCH_PYDIR "bench/baselines/python"
#endif

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Parse argv. Sets *quick, *workers (1..1024, left alone if not given) and
 * chosen[k] for each section named (all of them when none is). Returns -1
 * to go on, or the exit status to end with (0 after --help, 2 after a bad
 * argument, with the usage printed). */
static inline int bench_cli(int argc, char **argv, const char *prog, const char *const *names, size_t n,
                            bool *chosen, bool *quick, int *workers) {
    bool any = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0) {
            *quick = true;
        } else if (strcmp(argv[i], "--workers") == 0 && i + 1 < argc) {
            char *end;
            long w = strtol(argv[++i], &end, 10);
            if (*argv[i] == '\0' || *end != '\0' || w < 1 || w > 1024) {
                fprintf(stderr, "%s: --workers must be 1..1024, not '%s'\n", prog, argv[i]);
                return 2;
            }
            *workers = (int)w;
        } else {
            size_t k = 0;
            while (k < n && strcmp(argv[i], names[k]) != 0) k++;
            bool help = strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0;
            if (k == n) {
                FILE *to = help ? stdout : stderr;
                fprintf(to, "usage: %s [--quick] [--workers N] [", prog);
                for (size_t j = 0; j < n; j++) fprintf(to, "%s%s", j ? "|" : "", names[j]);
                fprintf(to, "]...\n");
                return help ? 0 : 2;
            }
            chosen[k] = any = true;
        }
    }
    if (!any)
        for (size_t k = 0; k < n; k++) chosen[k] = true;
    return -1;
}

/* The 1-minute load average now (the machine may be shared), or -1. */
static inline double bench_load(void) {
    FILE *la = fopen("/proc/loadavg", "r");
    double load1 = -1;
    if (la) {
        if (fscanf(la, "%lf", &load1) != 1) load1 = -1;
        fclose(la);
    }
    return load1;
}

#endif
