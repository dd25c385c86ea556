/* much_cpu_process: seed 002's CPU-bound processes, against crew threads.
 *
 * seeds/002 ("Simple Multiprocessing example", data/multi-test-2.py) starts
 * one process per CPU, each running the same loop, and times them:
 *     def target():
 *         print(os.getpid())
 *         for i in range(20_000_000):
 *             result = i * i
 *     procs = [Process(target=target) for f in range(cpu_count())]
 *     t = time.time()
 *     for p in procs: p.start()
 *     for p in procs: p.join()
 *     print('work took {} seconds'.format(time.time() - t))
 * (9.0 s on 16 CPUs; 27.1 s for the MuchCPU(Process) subclass version.)
 *
 * Here each worker folds its i * i into a checksum, so the compiler cannot
 * drop or shorten the loop, and stores it in a slot of an array in the
 * shared arena, where the parent reads it after the join. The same work is
 * then done by as many crew threads, which need no arena (threads share
 * memory), and by one worker alone for comparison. In Python only the
 * processes could use more than one CPU; in C both do, and the program
 * prints how long each took.
 *
 * usage: much_cpu_process [WORKERS] [--quick]
 *   WORKERS  processes and threads (default crew_cpu_count())
 *   --quick  2,000,000 iterations instead of 20,000,000 (for tests)
 * Exits 1 if a checksum differs from the single worker's.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <crew.h>

#define MAX_WORKERS 256

static long iterations = 20000000;
static uint64_t *results; /* one slot per worker, in the arena */

static uint64_t much_cpu(void) {
    uint64_t result = 0;
    for (long i = 0; i < iterations; i++)
        result = result * 3 + (uint64_t)i * (uint64_t)i;
    return result;
}

/* The seed's target(): the body of a process or a thread. */
static int target(void *arg) {
    size_t slot = (size_t)(uintptr_t)arg;
    results[slot] = much_cpu();
    return 0;
}

static double run_processes(size_t n) {
    crew_process *procs[MAX_WORKERS];
    double t = crew_now();
    for (size_t i = 0; i < n; i++) {
        int rc = crew_process_start(&procs[i], target, (void *)(uintptr_t)i, NULL);
        if (rc != 0) {
            fprintf(stderr, "much_cpu_process: crew_process_start: %s\n", crew_strerror(rc));
            exit(1);
        }
        printf("%d\n", crew_process_pid(procs[i]));
    }
    for (size_t i = 0; i < n; i++) {
        crew_process_join(procs[i], CREW_FOREVER);
        crew_process_free(procs[i]);
    }
    return crew_now() - t;
}

static double run_threads(size_t n) {
    crew_thread *threads[MAX_WORKERS];
    double t = crew_now();
    for (size_t i = 0; i < n; i++) {
        int rc = crew_thread_start(&threads[i], target, (void *)(uintptr_t)i, NULL);
        if (rc != 0) {
            fprintf(stderr, "much_cpu_process: crew_thread_start: %s\n", crew_strerror(rc));
            exit(1);
        }
    }
    for (size_t i = 0; i < n; i++) {
        crew_thread_join(threads[i], CREW_FOREVER, NULL);
        crew_thread_free(threads[i]);
    }
    return crew_now() - t;
}

int main(int argc, char **argv) {
    long workers = crew_cpu_count();
    for (int i = 1; i < argc; i++) {
        char *end;
        if (strcmp(argv[i], "--quick") == 0) {
            iterations = 2000000;
        } else if ((workers = strtol(argv[i], &end, 10)) < 1 || workers > MAX_WORKERS ||
                   *end != '\0') {
            fprintf(stderr, "usage: much_cpu_process [WORKERS] [--quick]\n");
            return 2;
        }
    }
    size_t n = (size_t)workers;
    results = crew_shm_alloc(n * sizeof *results); /* before the children start */
    if (results == NULL) {
        fprintf(stderr, "much_cpu_process: crew_shm_alloc failed\n");
        return 1;
    }

    printf("Running...\n");
    double t1 = crew_now();
    uint64_t expect = much_cpu();
    t1 = crew_now() - t1;
    double tp = run_processes(n);
    int wrong = 0;
    for (size_t i = 0; i < n; i++)
        wrong |= results[i] != expect;
    memset(results, 0, n * sizeof *results);
    double tt = run_threads(n);
    for (size_t i = 0; i < n; i++)
        wrong |= results[i] != expect;

    printf("one worker alone:        work took %.3f seconds\n", t1);
    printf("%3zu processes at once:   work took %.3f seconds\n", n, tp);
    printf("%3zu threads at once:     work took %.3f seconds\n", n, tt);
    printf("(%ld iterations each; crew_cpu_count %d)\n", iterations, crew_cpu_count());
    crew_shm_free(results);
    if (wrong)
        printf("WRONG\n");
    return wrong;
}
