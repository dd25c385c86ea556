/* Shared memory: the counterparts of multiprocessing.shared_memory,
 * Value/Array (memory, not objects), and the arena under crew's process
 * pool.
 *
 * The arena. crew_shm_alloc returns memory that is the same bytes at the same
 * address in this process and in every process forked from it after the
 * arena was set up, so pointers into it can be passed between those
 * processes as they are. The arena is one memfd (anonymous shared memory,
 * never visible in /dev/shm) mapped MAP_SHARED over a large reserved range of
 * address space at setup; growing it is an ftruncate() of that file, which
 * every process already maps, so memory allocated after a fork is seen by
 * the processes forked before it too. It is set up by crew_shm_setup or, with
 * defaults, by the first crew_shm_alloc. The arena disappears with the last
 * process that maps it, whatever way it ends (SIGKILL included): nothing to
 * clean up.
 *
 * Named segments, for processes that are not related by fork: a file in
 * /dev/shm that others open by name (shm_open). A segment this process
 * creates is unlinked when the process and every process forked from it have
 * ended, normally or by a signal, SIGKILL included: a small tracker process,
 * started with the first segment, holds the names and unlinks what is left
 * when the last of them is gone (what Python's resource_tracker does). Only
 * killing the tracker itself leaves names behind. Create with
 * .persist = true for a segment that should outlive its creator.
 */
#ifndef CREW_SHM_H
#define CREW_SHM_H

#include <stdbool.h>
#include <stddef.h>
#include "export.h"

/* ----------------------------------------------------------------- arena */

typedef struct crew_shm_arena_options {
    size_t reserve;            /* address space to reserve, bytes; the arena can
                                  never grow past it. 0 = the default: 64 GiB, or
                                  the environment variable CREW_ARENA_RESERVE
                                  (bytes, suffixes K M G T allowed). At least
                                  64 KiB; rounded up to pages. The built-in
                                  default shrinks (down to 256 MiB) to what
                                  the address space allows; a reserve asked
                                  for here or in the environment does not */
} crew_shm_arena_options;

/* Set the arena up now (before forking the processes that will share it).
 * Idempotent: 0 if it already exists (the options are then ignored).
 * CREW_ENOMEM if the address space cannot be reserved, CREW_ENOSYS without
 * memfd support, CREW_EMFILE without a free descriptor, CREW_EINVAL if
 * CREW_ARENA_RESERVE is needed and malformed. A failed setup may be retried.
 * Not blocking; thread-safe; a forked child inherits it. */
CREW_API int crew_shm_setup(const crew_shm_arena_options *opts);

/* Allocate `size` bytes (> 0) in the arena, aligned to 64 bytes (a cache
 * line), zero-filled. Returns NULL when size is 0 or the arena is full or
 * cannot be set up. Thread- and process-safe (a robust process-shared lock
 * guards the free lists); safe in a forked child. */
CREW_API void *crew_shm_alloc(size_t size);

/* Return arena memory to the arena; any process may free any block. NULL does
 * nothing. Returns 0, or CREW_EINVAL if `ptr` is not a live block of the
 * arena (double free included, where detectable; the block is then left
 * alone). Thread- and process-safe; not async-signal-safe, as alloc. */
CREW_API int crew_shm_free(void *ptr);

/* True if `ptr` points into the arena's reserved range. */
CREW_API bool crew_shm_contains(const void *ptr);

/* Bytes the arena's file holds now (its high-water mark, a multiple of the
 * page size; it grows in steps of at least 1 MiB), and bytes in live blocks
 * (each counted with its 16-byte header and rounding to 64 bytes).
 * Snapshots; 0 before setup. */
CREW_API size_t crew_shm_arena_size(void);
CREW_API size_t crew_shm_arena_used(void);

/* -------------------------------------------------------- named segments */

typedef struct crew_shm crew_shm;

typedef struct crew_shm_options {
    bool create;               /* create the segment (else attach to it) */
    bool exclusive;            /* with create: fail with CREW_EEXIST if it exists
                                  (ignored without create) */
    bool persist;              /* with create: leave it in place when this
                                  process family ends (no tracking; ignored
                                  without create) */
    size_t size;               /* create: the size (> 0). attach: 0 to take the
                                  segment's size, else it must match */
} crew_shm_options;

/* The longest name, without the leading '/'. */
#define CREW_SHM_NAME_MAX 250

/* Open (create or attach to) the segment `name` ("name" or "/name": one
 * leading slash allowed, no other; at most CREW_SHM_NAME_MAX bytes) and map it
 * read-write. opts NULL means attach. Returns 0 and *out; CREW_ENOENT
 * (attach: no such segment), CREW_EEXIST (exclusive create: it exists),
 * CREW_EINVAL (bad name, create with size 0, attach with a size that does not
 * match the segment's, or to a segment of size 0 whose creator has not sized
 * it yet), CREW_ENAMETOOLONG, CREW_EACCES, CREW_ENOMEM, CREW_EMFILE, and
 * CREW_EAGAIN when the tracker cannot be started (no process left).
 * A created segment's bytes start zeroed (mode 0600); creating an existing
 * segment without .exclusive attaches to it (its size must then match) and
 * does not track it. Blocks only briefly (starting the tracker forks).
 * Thread-safe; safe in a forked child, which shares its parent's tracker. */
CREW_API int crew_shm_open(crew_shm **out, const char *name, const crew_shm_options *opts);

/* Address and size of the mapping, and the name (with its leading '/').
 * NULL, 0 and NULL for a NULL handle. */
CREW_API void *crew_shm_addr(const crew_shm *shm);
CREW_API size_t crew_shm_size(const crew_shm *shm);
CREW_API const char *crew_shm_name(const crew_shm *shm);

/* Unmap and free the handle (the segment itself stays until unlinked). NULL
 * does nothing. A handle is private to its process: a forked child may use
 * the mapping it inherited and close its copy. */
CREW_API void crew_shm_close(crew_shm *shm);

/* Remove the name now (SharedMemory.unlink): processes that have it mapped
 * keep their mapping. CREW_ENOENT if there is no such segment, CREW_EINVAL or
 * CREW_ENAMETOOLONG for a bad name. */
CREW_API int crew_shm_unlink(const char *name);

#endif
