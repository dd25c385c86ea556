/* Per-task random streams: a random source whose numbers depend only on
 * (seed, stream), never on which thread, process or machine draws them, or
 * when. A Monte Carlo job that gives task i the stream i gets the same
 * answer whatever the worker count or schedule. (Python's forked Pool workers
 * all start from one copied random state, so their "random" draws repeat;
 * crew fixes that by design: streams are separate by construction.)
 *
 * The generator is Philox4x32-10 (Salmon, Moraes, Dror and Shaw, "Parallel
 * random numbers: as easy as 1, 2, 3", SC'11; the one in Random123, cuRAND,
 * numpy and JAX), counter-based: output block n of a stream is the 10-round
 * Philox bijection of the 128-bit counter (stream, n) under the 64-bit key
 * `seed`. Each (seed, stream) pair is its own sequence of 2^64 blocks of 128
 * bits (period 2^66 32-bit outputs); 2^64 streams per seed; skipping ahead
 * is O(1). Not for cryptography.
 *
 * A crew_rng is a small value: keep one per task (on the stack); copying it
 * copies its position. All functions are pure computations on the struct:
 * thread-safe on distinct structs, fork-safe, never fail, never allocate.
 */
#ifndef CREW_RNG_H
#define CREW_RNG_H

#include <stdint.h>
#include "export.h"

typedef struct crew_rng {
    uint32_t _key[2];          /* the seed */
    uint32_t _ctr[4];          /* [block number low, high, stream low, high] */
    uint32_t _out[4];          /* the current block's output */
    uint32_t _used;            /* 32-bit words of _out already handed out */
} crew_rng;

/* Position `rng` at the start of stream `stream` of `seed`. */
CREW_API void crew_rng_init(crew_rng *rng, uint64_t seed, uint64_t stream);

/* The next 32 or 64 random bits. */
CREW_API uint32_t crew_rng_u32(crew_rng *rng);
CREW_API uint64_t crew_rng_u64(crew_rng *rng);

/* A double uniform in [0, 1), with 53 random bits. */
CREW_API double crew_rng_uniform(crew_rng *rng);

/* An integer uniform in [0, n) without bias (Lemire's method); 0 when n is
 * 0. */
CREW_API uint64_t crew_rng_below(crew_rng *rng, uint64_t n);

/* A standard normal deviate (mean 0, standard deviation 1; Marsaglia's polar
 * method). */
CREW_API double crew_rng_normal(crew_rng *rng);

/* Move ahead by n 32-bit outputs at once, as if crew_rng_u32 had been called
 * n times. */
CREW_API void crew_rng_skip(crew_rng *rng, uint64_t n);

/* The bare Philox4x32-10 bijection: out = philox(ctr, key). For tests and
 * for users who manage counters themselves. */
CREW_API void crew_rng_philox(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);

#endif
