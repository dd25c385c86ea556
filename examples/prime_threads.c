/* prime_threads: the seed tutorial's CPU-bound threading example, with crew.
 *
 * The tutorial (seeds/001, "The use of thread in CPU bound tasks") sums the
 * primes <= 1,000,000, 2,000,000 and 3,000,000 with two Python threads taking
 * the numbers from a Queue, and finds it slower than one thread (25.5 s vs
 * 28 s) because of the interpreter lock. Here the same three sums run on
 * crew threads, which really run in parallel.
 *
 * Handing each thread one whole target, as the tutorial does, cannot balance:
 * the three tasks differ in size and there may be more threads than targets.
 * So the numbers 2..n of every target are cut into blocks, and each thread
 * takes the next block from a shared cursor (protected by a crew_lock) until
 * none is left, adding block sums into its own partial sum per target. At the
 * end each thread adds its partials into the per-target totals, each guarded
 * by its own crew_lock (the tutorial's list_lock).
 *
 * usage: prime_threads [THREADS] [--quick]
 *   THREADS  worker threads (default crew_cpu_count())
 *   --quick  targets 100,000, 200,000, 300,000 instead (for tests)
 * Prints the serial and threaded times, the speed-up and the three sums, and
 * exits 1 if the threaded sums differ from the serial ones.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <crew.h>

#define NTARGETS 3
#define BLOCK 16384 /* numbers per block: ~370 blocks in all, each well
                       above the cost of taking it from the cursor */
#define MAX_THREADS 1024

/* The seed's is_prime, unchanged: trial division by 6k +- 1. */
static bool is_prime(long num) {
    if (num <= 1)
        return false;
    if (num <= 3)
        return true;
    if (num % 2 == 0 || num % 3 == 0)
        return false;
    for (long i = 5; i * i <= num; i += 6)
        if (num % i == 0 || num % (i + 2) == 0)
            return false;
    return true;
}

/* Sum of the primes in [lo, hi]. */
static uint64_t sum_primes_range(long lo, long hi) {
    uint64_t sum = 0;
    for (long ix = lo; ix <= hi; ix++)
        if (is_prime(ix))
            sum += (uint64_t)ix;
    return sum;
}

/* State shared by the workers. */
typedef struct work {
    long targets[NTARGETS];
    long first_block[NTARGETS + 1]; /* target t owns blocks first_block[t] .. first_block[t+1]-1 */
    crew_lock cursor_lock;          /* protects next_block */
    long next_block;
    crew_lock total_lock[NTARGETS]; /* total_lock[t] protects total[t] */
    uint64_t total[NTARGETS];
} work;

static int worker(void *arg) {
    work *w = arg;
    uint64_t partial[NTARGETS] = {0};
    for (;;) {
        int rc = crew_lock_acquire(&w->cursor_lock, CREW_FOREVER);
        if (rc != 0)
            return rc;
        long b = w->next_block++;
        rc = crew_lock_release(&w->cursor_lock);
        if (rc != 0)
            return rc;
        if (b >= w->first_block[NTARGETS])
            break;
        int t = 0;
        while (b >= w->first_block[t + 1])
            t++;
        long lo = 2 + (b - w->first_block[t]) * BLOCK;
        long hi = lo + BLOCK - 1;
        if (hi > w->targets[t])
            hi = w->targets[t];
        partial[t] += sum_primes_range(lo, hi);
    }
    for (int t = 0; t < NTARGETS; t++) {
        int rc = crew_lock_acquire(&w->total_lock[t], CREW_FOREVER);
        if (rc != 0)
            return rc;
        w->total[t] += partial[t];
        rc = crew_lock_release(&w->total_lock[t]);
        if (rc != 0)
            return rc;
    }
    return 0;
}

static int check(int rc, const char *what) {
    if (rc != 0) {
        fprintf(stderr, "prime_threads: %s: %s\n", what, crew_strerror(rc));
        exit(1);
    }
    return rc;
}

static void usage(FILE *to) {
    fprintf(to, "usage: prime_threads [THREADS] [--quick]\n");
}

int main(int argc, char **argv) {
    long nthreads = 0;
    bool quick = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0) {
            quick = true;
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else {
            char *end;
            nthreads = strtol(argv[i], &end, 10);
            if (*argv[i] == '\0' || *end != '\0' || nthreads < 1 || nthreads > MAX_THREADS) {
                fprintf(stderr, "prime_threads: THREADS must be 1..%d, not '%s'\n", MAX_THREADS, argv[i]);
                usage(stderr);
                return 2;
            }
        }
    }
    if (nthreads == 0)
        nthreads = crew_cpu_count();

    static work w;
    const long scale = quick ? 100000 : 1000000;
    for (int t = 0; t < NTARGETS; t++) {
        w.targets[t] = (t + 1) * scale;
        w.first_block[t + 1] = w.first_block[t] + (w.targets[t] - 1 + BLOCK - 1) / BLOCK;
    }

    /* Serial: the tutorial's find_rand, one target after another. */
    uint64_t serial[NTARGETS];
    double t0 = crew_now();
    for (int t = 0; t < NTARGETS; t++)
        serial[t] = sum_primes_range(2, w.targets[t]);
    double serial_s = crew_now() - t0;

    /* Threaded. */
    check(crew_lock_init(&w.cursor_lock, 0), "crew_lock_init");
    for (int t = 0; t < NTARGETS; t++)
        check(crew_lock_init(&w.total_lock[t], 0), "crew_lock_init");
    crew_thread **threads = calloc((size_t)nthreads, sizeof *threads);
    if (threads == NULL)
        check(CREW_ENOMEM, "calloc");
    t0 = crew_now();
    for (long i = 0; i < nthreads; i++) {
        char name[32];
        snprintf(name, sizeof name, "prime-%ld", i);
        check(crew_thread_start(&threads[i], worker, &w, &(crew_thread_options){.name = name}),
              "crew_thread_start");
    }
    int failed = 0;
    for (long i = 0; i < nthreads; i++) {
        int result;
        check(crew_thread_join(threads[i], CREW_FOREVER, &result), "crew_thread_join");
        if (result != 0) {
            fprintf(stderr, "prime_threads: worker %ld: %s\n", i, crew_strerror(result));
            failed = 1;
        }
        crew_thread_free(threads[i]);
    }
    double threaded_s = crew_now() - t0;
    free(threads);

    int cpus = crew_cpu_count();
    printf("sum of primes <= n, %d targets, %ld thread(s) (crew_cpu_count %d)\n", NTARGETS,
           nthreads, cpus);
    printf("serial:   %.3f s\n", serial_s);
    printf("threaded: %.3f s\n", threaded_s);
    /* Efficiency against the cores the threads can actually use. */
    long used = nthreads < cpus ? nthreads : cpus;
    printf("speed-up: %.2fx (parallel efficiency %.0f%% on %ld cpu(s))\n", serial_s / threaded_s,
           100.0 * serial_s / threaded_s / (double)used, used);
    for (int t = 0; t < NTARGETS; t++) {
        bool same = w.total[t] == serial[t];
        printf("  n = %ld: %llu%s", w.targets[t], (unsigned long long)w.total[t],
               same ? "\n" : "  MISMATCH");
        if (!same) {
            printf(" (serial %llu)\n", (unsigned long long)serial[t]);
            failed = 1;
        }
    }

    for (int t = 0; t < NTARGETS; t++)
        check(crew_lock_destroy(&w.total_lock[t]), "crew_lock_destroy");
    check(crew_lock_destroy(&w.cursor_lock), "crew_lock_destroy");
    return failed;
}
