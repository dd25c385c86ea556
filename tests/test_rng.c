/* Tests for crew_rng: Philox4x32-10 against Random123's published
 * known-answer vectors, stream independence and reproducibility, skip-ahead
 * equal to stepping, the derived distributions, and a Monte Carlo whose
 * result is the same whatever the number of threads drawing it. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "crew.h"

static void test_known_answers(void **state) {
    (void)state;
    static const struct {
        uint32_t ctr[4], key[2], out[4];
    } kat[] = {
        {{0, 0, 0, 0}, {0, 0}, {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}},
        {{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff},
         {0xffffffff, 0xffffffff},
         {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}},
        {{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344},
         {0xa4093822, 0x299f31d0},
         {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}},
    };
    for (size_t i = 0; i < sizeof kat / sizeof kat[0]; i++) {
        uint32_t out[4];
        crew_rng_philox(kat[i].ctr, kat[i].key, out);
        for (int w = 0; w < 4; w++) assert_int_equal(out[w], kat[i].out[w]);
    }
}

/* The stream's words are the Philox blocks of counters (n, stream) in order. */
static void test_stream_is_philox_of_counter(void **state) {
    (void)state;
    uint64_t seed = 0x0123456789abcdefULL, stream = 0xfedcba9876543210ULL;
    crew_rng r;
    crew_rng_init(&r, seed, stream);
    uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
    for (uint32_t block = 0; block < 5; block++) {
        uint32_t ctr[4] = {block, 0, (uint32_t)stream, (uint32_t)(stream >> 32)}, out[4];
        crew_rng_philox(ctr, key, out);
        for (int w = 0; w < 4; w++) assert_int_equal(crew_rng_u32(&r), out[w]);
    }
}

static void test_reproducible_and_distinct(void **state) {
    (void)state;
    crew_rng a, b, c, d;
    crew_rng_init(&a, 42, 7);
    crew_rng_init(&b, 42, 7);
    crew_rng_init(&c, 42, 8);
    crew_rng_init(&d, 43, 7);
    int same_c = 0, same_d = 0;
    for (int i = 0; i < 1000; i++) {
        uint64_t x = crew_rng_u64(&a);
        assert_int_equal(x, crew_rng_u64(&b));
        same_c += x == crew_rng_u64(&c);
        same_d += x == crew_rng_u64(&d);
    }
    assert_int_equal(same_c, 0);
    assert_int_equal(same_d, 0);
    /* A copy continues from the same position. */
    crew_rng e = a;
    assert_int_equal(crew_rng_u32(&e), crew_rng_u32(&a));
}

static void test_skip_equals_stepping(void **state) {
    (void)state;
    static const uint64_t steps[] = {0, 1, 2, 3, 4, 5, 7, 8, 9, 63, 64, 65, 1000, 4097};
    for (int start = 0; start < 6; start++) {
        for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
            crew_rng walk, jump;
            crew_rng_init(&walk, 9, 3);
            crew_rng_init(&jump, 9, 3);
            for (int k = 0; k < start; k++) {
                crew_rng_u32(&walk);
                crew_rng_u32(&jump);
            }
            for (uint64_t k = 0; k < steps[i]; k++) crew_rng_u32(&walk);
            crew_rng_skip(&jump, steps[i]);
            for (int k = 0; k < 9; k++) assert_int_equal(crew_rng_u32(&jump), crew_rng_u32(&walk));
        }
    }
    /* Far jumps land on the block the counter names. */
    crew_rng r;
    crew_rng_init(&r, 1, 2);
    crew_rng_skip(&r, (uint64_t)4 << 40);
    uint32_t ctr[4] = {0, 1u << 8, 2, 0}, key[2] = {1, 0}, out[4];
    crew_rng_philox(ctr, key, out);
    assert_int_equal(crew_rng_u32(&r), out[0]);
}

static void test_distributions(void **state) {
    (void)state;
    crew_rng r;
    crew_rng_init(&r, 2026, 0);
    const int n = 200000;
    double sum = 0, sumsq = 0, nsum = 0, nsumsq = 0;
    long counts[10] = {0};
    for (int i = 0; i < n; i++) {
        double u = crew_rng_uniform(&r);
        assert_true(u >= 0.0 && u < 1.0);
        sum += u;
        sumsq += u * u;
        uint64_t k = crew_rng_below(&r, 10);
        assert_true(k < 10);
        counts[k]++;
        double z = crew_rng_normal(&r);
        nsum += z;
        nsumsq += z * z;
    }
    double mean = sum / n, var = sumsq / n - mean * mean;
    assert_true(fabs(mean - 0.5) < 0.005);
    assert_true(fabs(var - 1.0 / 12) < 0.002);
    double chi2 = 0;
    for (int k = 0; k < 10; k++) chi2 += (counts[k] - n / 10.0) * (counts[k] - n / 10.0) / (n / 10.0);
    assert_true(chi2 < 30.0); /* 9 degrees of freedom: p < 0.001 beyond ~27.9 */
    double nmean = nsum / n, nvar = nsumsq / n - nmean * nmean;
    assert_true(fabs(nmean) < 0.01);
    assert_true(fabs(nvar - 1.0) < 0.02);
    assert_int_equal(crew_rng_below(&r, 0), 0);
    assert_int_equal(crew_rng_below(&r, 1), 0);
    /* Huge bounds stay in range. */
    for (int i = 0; i < 1000; i++) assert_true(crew_rng_below(&r, UINT64_MAX - 5) < UINT64_MAX - 5);
}

/* Monte Carlo pi over TASKS tasks, task i drawing from stream i, split over
 * `nthreads` crew threads: the hit count must not depend on nthreads. */
#define TASKS 64
#define DRAWS 20000

typedef struct mc_job {
    int first, step;
    long hits[TASKS];
} mc_job;

static int mc_worker(void *arg) {
    mc_job *job = arg;
    for (int t = job->first; t < TASKS; t += job->step) {
        crew_rng r;
        crew_rng_init(&r, 12345, (uint64_t)t);
        long hits = 0;
        for (int i = 0; i < DRAWS; i++) {
            double x = crew_rng_uniform(&r), y = crew_rng_uniform(&r);
            hits += x * x + y * y < 1.0;
        }
        job->hits[t] = hits;
    }
    return 0;
}

static long mc_total(int nthreads) {
    mc_job jobs[8];
    crew_thread *th[8];
    for (int i = 0; i < nthreads; i++) {
        memset(&jobs[i], 0, sizeof jobs[i]);
        jobs[i].first = i;
        jobs[i].step = nthreads;
        assert_int_equal(crew_thread_start(&th[i], mc_worker, &jobs[i], NULL), 0);
    }
    long total = 0;
    for (int i = 0; i < nthreads; i++) {
        assert_int_equal(crew_thread_join(th[i], CREW_FOREVER, NULL), 0);
        crew_thread_free(th[i]);
        for (int t = 0; t < TASKS; t++) total += jobs[i].hits[t];
    }
    return total;
}

static void test_monte_carlo_independent_of_threads(void **state) {
    (void)state;
    long one = mc_total(1);
    assert_int_equal(mc_total(2), one);
    assert_int_equal(mc_total(3), one);
    assert_int_equal(mc_total(8), one);
    double pi = 4.0 * (double)one / ((double)TASKS * DRAWS);
    assert_true(fabs(pi - 3.14159265) < 0.01);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_known_answers),
        cmocka_unit_test(test_stream_is_philox_of_counter),
        cmocka_unit_test(test_reproducible_and_distinct),
        cmocka_unit_test(test_skip_equals_stepping),
        cmocka_unit_test(test_distributions),
        cmocka_unit_test(test_monte_carlo_independent_of_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
