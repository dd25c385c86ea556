/* OpenMP baselines of bench_pool (compiled with -fopenmp; see
 * pool_baselines.h). The loop bodies are bench/pool_bodies.h's, the same
 * crew's code runs. */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

#include "../pool_bodies.h"
#include "pool_baselines.h"

const char *omp_pool_describe(void) {
    static char buf[160];
    const char *policy = getenv("OMP_WAIT_POLICY");
#if defined(__clang__)
    const char *rt = "clang libomp";
#elif defined(__GNUC__)
    const char *rt = "gcc libgomp";
#else
    const char *rt = "unknown runtime";
#endif
    snprintf(buf, sizeof buf, "%s, OpenMP %d, OMP_WAIT_POLICY=%s", rt, _OPENMP,
             policy ? policy : "(unset: the runtime's default)");
    return buf;
}

void omp_pool_warm(int workers) {
    volatile int sink = 0;
#pragma omp parallel num_threads(workers)
    {
#pragma omp atomic
        sink += 1;
    }
    (void)sink;
}

void omp_pool_empty_tasks(size_t n, int workers) {
#pragma omp parallel num_threads(workers)
#pragma omp single
    {
        for (size_t i = 0; i < n; i++) {
#pragma omp task
            BENCH_EMPTY_BODY();
        }
#pragma omp taskwait
    }
}

static void omp_tree(int depth) {
    if (depth == 0) {
        BENCH_EMPTY_BODY();
        return;
    }
#pragma omp task
    omp_tree(depth - 1);
#pragma omp task
    omp_tree(depth - 1);
}

void omp_pool_tree_tasks(int depth, int workers) {
#pragma omp parallel num_threads(workers)
#pragma omp single
    omp_tree(depth);
}

void omp_pool_for_static(uint32_t *a, size_t n, int workers) {
#pragma omp parallel for schedule(static) num_threads(workers)
    for (size_t i = 0; i < n; i++)
        a[i] = (uint32_t)i * 2u;
}

void omp_pool_for_dynamic(uint32_t *a, size_t n, int workers, size_t chunk) {
#pragma omp parallel for schedule(dynamic, chunk) num_threads(workers)
    for (size_t i = 0; i < n; i++)
        a[i] = (uint32_t)i * 2u;
}

uint64_t omp_pool_pi(uint64_t seed, size_t n, size_t block, int workers) {
    uint64_t inside = 0;
    size_t blocks = (n + block - 1) / block;
#pragma omp parallel for schedule(static) reduction(+ : inside) num_threads(workers)
    for (size_t k = 0; k < blocks; k++) {
        size_t b = k * block, e = b + block < n ? b + block : n;
        inside += bench_pi_count(seed, b, e);
    }
    return inside;
}

uint64_t omp_pool_primes(long lo, long hi, int workers, size_t chunk) {
    uint64_t sum = 0;
    if (chunk == 0) {
#pragma omp parallel for schedule(static) reduction(+ : sum) num_threads(workers)
        for (long ix = lo; ix < hi; ix++)
            if (bench_is_prime(ix))
                sum += (uint64_t)ix;
    } else {
#pragma omp parallel for schedule(dynamic, chunk) reduction(+ : sum) num_threads(workers)
        for (long ix = lo; ix < hi; ix++)
            if (bench_is_prime(ix))
                sum += (uint64_t)ix;
    }
    return sum;
}
