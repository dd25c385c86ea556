/* The baselines of bench_pool, each in its own translation unit so that
 * crew's code is not compiled with -fopenmp (or as C++):
 *   omp_pool.c   OpenMP (compiled with -fopenmp), when CMake finds OpenMP;
 *   tbb_pool.cpp oneTBB's task_group, when CMake finds TBB and a C++ compiler.
 * bench_pool.c calls them only when CREW_BENCH_HAVE_OPENMP / _TBB is set. */
#ifndef CREW_BENCH_POOL_BASELINES_H
#define CREW_BENCH_POOL_BASELINES_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- OpenMP (omp_pool.c). Every region uses `workers` threads. */

/* Which runtime, its version and wait policy, for the output. */
const char *omp_pool_describe(void);
/* One empty parallel region, so the team exists before anything is timed. */
void omp_pool_warm(int workers);
/* #pragma omp parallel + single; n x #pragma omp task (empty); taskwait. */
void omp_pool_empty_tasks(size_t n, int workers);
/* A binary tree of tasks, `depth` levels below the root (2^(depth+1) - 1
 * tasks, the leaves empty): each inner task spawns its two children and
 * returns; the single's implicit barrier waits for all. */
void omp_pool_tree_tasks(int depth, int workers);
/* parallel for over [0, n), a[i] = 2i; schedule(static) or (dynamic, chunk). */
void omp_pool_for_static(uint32_t *a, size_t n, int workers);
void omp_pool_for_dynamic(uint32_t *a, size_t n, int workers, size_t chunk);
/* Monte Carlo pi: parallel for reduction(+:inside), schedule(static), over
 * blocks of `block` samples (each block positions its own Philox stream). */
uint64_t omp_pool_pi(uint64_t seed, size_t n, size_t block, int workers);
/* Sum of the primes in [lo, hi): parallel for reduction(+:sum),
 * schedule(static) when chunk is 0, else schedule(dynamic, chunk). */
uint64_t omp_pool_primes(long lo, long hi, int workers, size_t chunk);

/* ---- oneTBB (tbb_pool.cpp). */

const char *tbb_pool_describe(void);
/* Make a task_arena of `workers` threads (the calling thread included).
 * 0 or -1. */
int tbb_pool_init(int workers);
/* In the arena: one task_group, n x run(empty), wait. */
void tbb_pool_empty_tasks(size_t n);
/* In the arena: the same tree as omp_pool_tree_tasks, every task run in one
 * task_group by its parent; wait. */
void tbb_pool_tree_tasks(int depth);
void tbb_pool_fini(void);

#ifdef __cplusplus
}
#endif

#endif
