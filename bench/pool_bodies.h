/* The loop bodies of bench_pool, shared by crew's code (bench_pool.c) and the
 * baselines (baselines/omp_pool.c): every version of a figure runs the same
 * body, compiled with the same -O2, so only the scheduling differs. */
#ifndef CREW_BENCH_POOL_BODIES_H
#define CREW_BENCH_POOL_BODIES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <crew/rng.h>

/* An empty task's body: nothing the compiler can see through. */
#define BENCH_EMPTY_BODY() __asm__ __volatile__("" ::: "memory")

/* ---- for: a[i] = 2i over [b, e) (stores to a big array: the compiler
 * cannot delete them, and a wrong split shows in the check). */
static inline void bench_for_body(uint32_t *a, size_t b, size_t e) {
    for (size_t i = b; i < e; i++)
        a[i] = (uint32_t)i * 2u;
}

/* ---- Monte Carlo pi: samples [b, e) of one Philox stream, two doubles
 * (four 32-bit outputs) per sample, so sample k is the same numbers however
 * the range is split. Returns how many fall inside the quarter circle. */
static inline uint64_t bench_pi_count(uint64_t seed, size_t b, size_t e) {
    crew_rng r;
    crew_rng_init(&r, seed, 0);
    crew_rng_skip(&r, 4 * (uint64_t)b);
    uint64_t inside = 0;
    for (size_t i = b; i < e; i++) {
        double x = crew_rng_uniform(&r), y = crew_rng_uniform(&r);
        inside += x * x + y * y < 1.0;
    }
    return inside;
}

/* ---- Primes: the seed's is_prime (seeds/001, as examples/prime_threads.c
 * ports it), trial division by 6k +- 1. */
static inline bool bench_is_prime(long num) {
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

/* Sum of the primes in [lo, hi) (the seed's find_rand over a sub-range). */
static inline uint64_t bench_sum_primes(long lo, long hi) {
    uint64_t sum = 0;
    for (long ix = lo; ix < hi; ix++)
        if (bench_is_prime(ix))
            sum += (uint64_t)ix;
    return sum;
}

#endif
