/* prime_pool: the seed tutorial's Pool(4).map(sum_prime, ...) with crew.
 *
 * The tutorial (seeds/001, "Multiprocessing for parallel execution of
 * tasks") sums the primes <= 1,000,000, 2,000,000 and 3,000,000 with
 *     with Pool(4) as p: print(p.map(sum_prime, [1000000, 2000000, 3000000]))
 * and gets 20.3 s -> 11.6 s on four cores: three unequal tasks cannot keep
 * four workers busy, and the largest one alone takes half the time.
 *
 * Here the map over the three targets stays, but each sum_prime task splits
 * its own range with crew_pool_reduce on the same pool (a nested call: the
 * waiting worker runs pieces of the loop meanwhile, so this cannot
 * deadlock). Idle workers take pieces of whichever target still has work,
 * and all of them finish together.
 *
 * With --processes the pool's workers are processes, as the tutorial's
 * are. The program is the same, but a task of a process pool runs its
 * nested reduce itself, in its own process (a child cannot hand work to
 * the others), so each target is one task again, as in Python, and three
 * unequal tasks cannot keep the workers equally busy.
 *
 * usage: prime_pool [WORKERS] [--processes] [--quick]
 *   WORKERS      pool workers (default crew_cpu_count())
 *   --processes  worker processes (CREW_PROCESSES) instead of threads
 *   --quick      targets 100,000, 200,000, 300,000 instead (for tests)
 * Prints the serial and pool times, the speed-up and the three sums; exits
 * 1 if a pool sum differs from the serial one.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <crew.h>

#define NTARGETS 3

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

/* Reduce body: add the primes in [b, e) to *acc. */
static int sum_primes_range(size_t b, size_t e, void *acc, void *ctx) {
    (void)ctx;
    uint64_t sum = 0;
    for (size_t ix = b; ix < e; ix++)
        if (is_prime((long)ix))
            sum += ix;
    *(uint64_t *)acc += sum;
    return 0;
}

static void add(void *acc, const void *other, void *ctx) {
    (void)ctx;
    *(uint64_t *)acc += *(const uint64_t *)other;
}

/* The map task: the seed's sum_prime(num), as a parallel reduce over
 * [2, num] on the pool this task runs on. */
static int sum_prime(const void *in, void *out, void *ctx) {
    (void)ctx;
    long num = *(const long *)in;
    uint64_t zero = 0;
    return crew_pool_reduce(crew_pool_current(),
                            &(crew_reduce){.begin = 2, .end = (size_t)num + 1,
                                           .body = sum_primes_range, .combine = add,
                                           .identity = &zero, .size = sizeof(uint64_t),
                                           .result = out});
}

int main(int argc, char **argv) {
    long workers = 0;
    bool quick = false;
    crew_pool_kind kind = CREW_THREADS;
    for (int i = 1; i < argc; i++) {
        char *end;
        if (strcmp(argv[i], "--quick") == 0) {
            quick = true;
        } else if (strcmp(argv[i], "--processes") == 0) {
            kind = CREW_PROCESSES;
        } else if ((workers = strtol(argv[i], &end, 10)) < 1 || *end != '\0') {
            fprintf(stderr, "usage: prime_pool [WORKERS] [--processes] [--quick]\n");
            return 2;
        }
    }

    const long scale = quick ? 100000 : 1000000;
    long targets[NTARGETS];
    for (int t = 0; t < NTARGETS; t++)
        targets[t] = (t + 1) * scale;

    /* Serial: the seed's sum_prime, one target after another. */
    uint64_t serial[NTARGETS];
    double t0 = crew_now();
    for (int t = 0; t < NTARGETS; t++) {
        serial[t] = 0;
        sum_primes_range(2, (size_t)targets[t] + 1, &serial[t], NULL);
    }
    double serial_s = crew_now() - t0;

    crew_pool *pool;
    int rc =
        crew_pool_create(&pool, &(crew_pool_options){.kind = kind, .workers = (size_t)workers});
    if (rc != 0) {
        fprintf(stderr, "prime_pool: crew_pool_create: %s\n", crew_strerror(rc));
        return 1;
    }
    uint64_t sums[NTARGETS];
    t0 = crew_now();
    rc = crew_pool_map(pool, &(crew_map){.fn = sum_prime, .in = targets, .in_size = sizeof *targets,
                                         .out = sums, .out_size = sizeof *sums,
                                         .count = NTARGETS});
    double pool_s = crew_now() - t0;
    size_t used = crew_pool_workers(pool);
    crew_pool_free(pool);
    if (rc != 0) {
        fprintf(stderr, "prime_pool: crew_pool_map: %s\n", crew_strerror(rc));
        return 1;
    }

    int cpus = crew_cpu_count();
    size_t cores = used < (size_t)cpus ? used : (size_t)cpus;
    printf("sum of primes <= n, %d targets, %zu %s (crew_cpu_count %d)\n", NTARGETS, used,
           kind == CREW_PROCESSES ? "process(es)" : "thread(s)", cpus);
    printf("serial: %.3f s\n", serial_s);
    printf("pool:   %.3f s\n", pool_s);
    printf("speed-up: %.2fx (parallel efficiency %.0f%% on %zu cpu(s))\n", serial_s / pool_s,
           100.0 * serial_s / pool_s / (double)cores, cores);
    int failed = 0;
    for (int t = 0; t < NTARGETS; t++) {
        printf("  n = %ld: %llu", targets[t], (unsigned long long)sums[t]);
        if (sums[t] != serial[t]) {
            printf("  WRONG (serial %llu)", (unsigned long long)serial[t]);
            failed = 1;
        }
        printf("\n");
    }
    return failed;
}
