/* Internal: a per-thread cache of small fixed-size blocks, so that the
 * pool's short-lived records (futures of submitted tasks, task-group
 * entries) cost no trip through malloc on their hot paths.
 *
 * Blocks come in two size classes (CREW__BLOCK_SMALL and CREW__BLOCK_LARGE
 * bytes); a request up to a class's size takes a block of that class from
 * the calling thread's cache, and a freed block goes back to the freeing
 * thread's cache (any thread may free a block another allocated: blocks of
 * a class are all alike), up to a bound per class; anything else uses
 * malloc and free. A thread's cache is freed when the thread exits. The
 * caller passes the same size to free as to alloc. Off under
 * AddressSanitizer, so that it keeps finding use-after-free. */
#ifndef CREW_SRC_BLOCK_CACHE_H
#define CREW_SRC_BLOCK_CACHE_H

#include <stddef.h>

#define CREW__BLOCK_SMALL 64
#define CREW__BLOCK_LARGE 192

/* A block of at least `size` bytes (max_align_t aligned), or NULL. */
void *crew__block_alloc(size_t size);
/* Give back a block from crew__block_alloc(size). */
void crew__block_free(void *p, size_t size);

#endif
