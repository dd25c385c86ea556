/* crew_rng: Philox4x32-10 with the counter (block number, stream) and the key
 * `seed` (see include/crew/rng.h). No shared state: every function works on
 * the caller's struct only.
 *
 * The struct buffers one 128-bit output block; `_used` counts the 32-bit
 * words of it already handed out (4 = exhausted). `_ctr` always names the
 * *next* block to compute. */
#include "crew/rng.h"

#include <math.h>
#include <stddef.h>

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

void crew_rng_philox(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]) {
    uint32_t c0 = ctr[0], c1 = ctr[1], c2 = ctr[2], c3 = ctr[3];
    uint32_t k0 = key[0], k1 = key[1];
    for (int round = 0; round < 10; round++) {
        uint64_t p0 = (uint64_t)PHILOX_M0 * c0;
        uint64_t p1 = (uint64_t)PHILOX_M1 * c2;
        uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0;
        uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
        c0 = n0;
        c1 = (uint32_t)p1;
        c2 = n2;
        c3 = (uint32_t)p0;
        k0 += PHILOX_W0;
        k1 += PHILOX_W1;
    }
    out[0] = c0;
    out[1] = c1;
    out[2] = c2;
    out[3] = c3;
}

static uint64_t block_of(const crew_rng *rng) { return (uint64_t)rng->_ctr[1] << 32 | rng->_ctr[0]; }

static void set_block(crew_rng *rng, uint64_t block) {
    rng->_ctr[0] = (uint32_t)block;
    rng->_ctr[1] = (uint32_t)(block >> 32);
}

/* Compute the block `_ctr` names into `_out` and step `_ctr` past it. */
static void refill(crew_rng *rng) {
    crew_rng_philox(rng->_ctr, rng->_key, rng->_out);
    set_block(rng, block_of(rng) + 1);
    rng->_used = 0;
}

void crew_rng_init(crew_rng *rng, uint64_t seed, uint64_t stream) {
    if (rng == NULL) return;
    rng->_key[0] = (uint32_t)seed;
    rng->_key[1] = (uint32_t)(seed >> 32);
    rng->_ctr[0] = rng->_ctr[1] = 0;
    rng->_ctr[2] = (uint32_t)stream;
    rng->_ctr[3] = (uint32_t)(stream >> 32);
    rng->_out[0] = rng->_out[1] = rng->_out[2] = rng->_out[3] = 0;
    rng->_used = 4;
}

uint32_t crew_rng_u32(crew_rng *rng) {
    if (rng->_used >= 4) refill(rng);
    return rng->_out[rng->_used++];
}

uint64_t crew_rng_u64(crew_rng *rng) {
    uint64_t lo = crew_rng_u32(rng);
    return (uint64_t)crew_rng_u32(rng) << 32 | lo;
}

double crew_rng_uniform(crew_rng *rng) { return (double)(crew_rng_u64(rng) >> 11) * 0x1.0p-53; }

uint64_t crew_rng_below(crew_rng *rng, uint64_t n) {
    if (n == 0) return 0;
    /* Lemire, "Fast random integer generation in an interval" (2019). */
    unsigned __int128 m = (unsigned __int128)crew_rng_u64(rng) * n;
    uint64_t low = (uint64_t)m;
    if (low < n) {
        uint64_t threshold = -n % n;
        while (low < threshold) {
            m = (unsigned __int128)crew_rng_u64(rng) * n;
            low = (uint64_t)m;
        }
    }
    return (uint64_t)(m >> 64);
}

double crew_rng_normal(crew_rng *rng) {
    for (;;) {
        double u = 2.0 * crew_rng_uniform(rng) - 1.0;
        double v = 2.0 * crew_rng_uniform(rng) - 1.0;
        double s = u * u + v * v;
        if (s > 0.0 && s < 1.0) return u * sqrt(-2.0 * log(s) / s);
    }
}

void crew_rng_skip(crew_rng *rng, uint64_t n) {
    /* Absolute position in 32-bit words of the next output. */
    uint64_t next_block = block_of(rng);
    uint64_t pos = (next_block - (rng->_used < 4 ? 1 : 0)) * 4 + (rng->_used < 4 ? rng->_used : 0) + n;
    set_block(rng, pos / 4);
    if (pos % 4 == 0) {
        rng->_used = 4; /* compute on the next draw */
    } else {
        refill(rng);
        rng->_used = (uint32_t)(pos % 4);
    }
}
