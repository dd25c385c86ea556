/* crew shared memory: the arena (crew_shm_alloc/free) and named segments
 * (crew_shm_open/close/unlink). The tracker that unlinks segments left
 * behind lives in shm_tracker.c.
 *
 * The arena. One memfd, sized by ftruncate, mapped MAP_SHARED over the whole
 * reserved range once, at setup; every process forked afterwards inherits
 * the mapping, so growing the file (by any process) is seen by all of them
 * at the same addresses. The file is sealed against shrinking.
 *
 * Layout of the file, by offset from the mapping's base:
 *   [0, HEAP_START)        the arena header (struct arena), shared by all
 *   [HEAP_START, top)      blocks, tiling the range exactly
 *   [top, file_size)       wilderness, taken by advancing `top`
 * A block is a 16-byte header (magic, flags, size) followed by its data; a
 * block's size is a multiple of 64 and every block starts 16 bytes before a
 * 64-byte boundary, so all data is cache-line aligned. A free block keeps
 * its free-list links (offsets, 0 = none) at the start of its data and its
 * size in its last 8 bytes (the footer), and the block after it has
 * PREV_FREE set, so that a free can find and merge with its previous
 * neighbour. Free blocks sit in segregated lists: 64 exact size classes up
 * to 4 KiB, then 8 classes per power of two; a bitmap says which lists are
 * non-empty. Allocation takes the first fit among a few entries of its own
 * class, else any block of the next non-empty class (which fits by
 * construction), splitting off the rest; failing that, it advances `top`,
 * growing the file when needed. Freeing merges with free neighbours; a free
 * block that ends at `top` is given back to the wilderness. Invariants: no
 * two free blocks are adjacent, the block before `top` is in use, and every
 * byte at or above `clean_from` has never been written since the file grew
 * over it (still zero), so memory taken from there needs no clearing.
 *
 * Who touches what. Every field of the header but the snapshots, every
 * block header, link and footer is read and written only with the arena's
 * lock held: a robust, process-shared crew_lock, so any thread of any
 * process of the family may allocate or free. A block's data belongs to
 * whoever holds the block; it is cleared after the lock is dropped (the
 * block is already marked in use, and nothing else is written inside it),
 * large ranges by punching a hole in the file, which also returns their
 * pages. A free of a block of 2 MiB or more punches its interior before it
 * takes the lock, while the block is still the caller's. `file_size` and
 * `used` are atomics so that crew_shm_arena_size/_used can read them
 * without the lock.
 *
 * Death inside the lock. If a process dies holding the lock, the next
 * acquirer gets CREW_EOWNERDEAD and rebuilds the free lists, the bitmap,
 * the flags, footers and `used` from the block headers alone (walking from
 * HEAP_START to `top`), and takes the file size from fstat. That works
 * because every change to the tiling is committed by a single store that
 * moves it from one valid tiling to another: a split writes the remainder's
 * header before shrinking the block; a merge grows the surviving block in
 * one store; `top` moves in one store after the new block's header is
 * written; `clean_from` is raised before anything above it is written. So a
 * death loses at most the block being allocated (committed but never
 * returned) and never corrupts what others hold, and the allocator never
 * hangs: the robust lock cannot stay held by the dead. A walk that finds a
 * header that cannot be (only a write past the end of a block does that)
 * marks the arena broken: allocation then returns NULL rather than risk
 * handing out memory twice.
 *
 * Process-local state (`g_arena`, `g_fd`, `g_reserve`) is written once under
 * `setup_mu` and published by the release store of `g_arena`; fork copies
 * it, and `setup_mu` is held across fork() (atfork) so a child never
 * inherits it locked mid-setup.
 *
 * Named segments are plain shm_open files mapped once per handle; the
 * handle is private to the process that opened it.
 */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "crew/clock.h"
#include "crew/error.h"
#include "crew/shm.h"
#include "crew/sync.h"
#include "shm_internal.h"

/* ------------------------------------------------------------ constants */

#define ALIGN 64u                       /* block size unit and data alignment */
#define BLK_HDR 16u                     /* block header bytes */
#define HDR_AREA 4096u                  /* the arena header's share of the file */
#define HEAP_START (HDR_AREA - BLK_HDR) /* first block; its data at HDR_AREA */
#define MIN_BLOCK ALIGN
#define SMALL_BINS 64u                  /* exact classes: 64 B .. 4 KiB */
#define SL_BITS 3u                      /* 8 classes per power of two above */
#define MAX_RESERVE_BITS 48u             /* reserves up to 256 TiB */
/* Classes above the small ones: one row of 8 per power of two of the size in
 * units of 64 bytes, from 2^6 units to the largest block's 2^(48-6). */
#define NBINS (SMALL_BINS + (MAX_RESERVE_BITS - 6u - 6u + 1u) * (1u << SL_BITS))
#define MAP_WORDS ((NBINS + 63u) / 64u)
#define SCAN_LIMIT 8                    /* entries tried in a request's own class */

#define DEFAULT_RESERVE ((size_t)64 << 30)
#define MIN_RESERVE ((size_t)64 << 10)
#define FALLBACK_RESERVE ((size_t)256 << 20) /* the default shrinks no further */
#define GROW_STEP ((size_t)1 << 20)     /* the file grows by at least this */
#define PUNCH_MIN ((size_t)1 << 20)     /* clear/release with a hole from this size */

#define ARENA_MAGIC UINT64_C(0x414e4552412d5743) /* "CW-ARENA" */
#define BLK_USED 0x44455355u                     /* "USED" */
#define BLK_FREE 0x45455246u                     /* "FREE" */
#define PREV_FREE 1u

/* ------------------------------------------------------------ structures */

typedef struct blk {
    uint32_t magic;   /* BLK_USED or BLK_FREE */
    uint32_t flags;   /* PREV_FREE: the block before this one is free */
    uint64_t size;    /* the whole block, header included */
} blk;

typedef struct arena {
    uint64_t magic;
    uint64_t reserve;          /* bytes mapped; constant */
    crew_lock lock;            /* CREW_SHARED, robust: guards everything below
                                  but the two snapshots, and every block header */
    _Atomic uint64_t file_size; /* the file's length; stored under the lock */
    _Atomic uint64_t used;     /* bytes in live blocks; stored under the lock */
    uint64_t top;              /* end of the blocks, start of the wilderness */
    uint64_t clean_from;       /* bytes at or above it are still zero */
    uint32_t broken;           /* a rebuild found a corrupt header */
    uint64_t bitmap[MAP_WORDS];
    uint64_t bins[NBINS];      /* heads of the free lists, 0 = empty */
} arena;

_Static_assert(sizeof(arena) <= HEAP_START, "the arena header must fit before the heap");
_Static_assert(sizeof(blk) == BLK_HDR, "block header size");
_Static_assert(HDR_AREA % ALIGN == 0, "data alignment");

/* Process-local; see the comment at the top. */
static pthread_mutex_t setup_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t setup_once = PTHREAD_ONCE_INIT;
static _Atomic(arena *) g_arena;  /* release-stored after g_fd, g_reserve */
static int g_fd = -1;
static size_t g_reserve;

int crew__shm_crash_point;

/* Commit points: a process may die between any two instructions, so the
 * stores that change the tiling must reach memory in program order. A
 * compiler barrier is enough: a killed process's completed stores are not
 * lost, and the next holder of the lock acquires after them. */
#define COMMIT() atomic_signal_fence(memory_order_seq_cst)

#define CRASH_POINT(n)                                                        \
    do {                                                                      \
        if (__builtin_expect(crew__shm_crash_point == (n), 0)) _exit(CREW__SHM_CRASH_STATUS); \
    } while (0)

/* --------------------------------------------------------------- helpers */

static size_t page_size(void) {
    static _Atomic size_t cached;
    size_t p = atomic_load_explicit(&cached, memory_order_relaxed);
    if (p == 0) {
        long v = sysconf(_SC_PAGESIZE);
        p = v > 0 ? (size_t)v : 4096;
        atomic_store_explicit(&cached, p, memory_order_relaxed);
    }
    return p;
}

static inline uint64_t round_up(uint64_t v, uint64_t to) { return (v + to - 1) / to * to; }

static inline blk *B(arena *a, uint64_t off) { return (blk *)((char *)a + off); }
static inline uint64_t *link_next(arena *a, uint64_t off) { return (uint64_t *)((char *)a + off + BLK_HDR); }
static inline uint64_t *link_prev(arena *a, uint64_t off) { return (uint64_t *)((char *)a + off + BLK_HDR + 8); }
static inline uint64_t *footer(arena *a, uint64_t off, uint64_t size) {
    return (uint64_t *)((char *)a + off + size - 8);
}

/* ------------------------------------------------------------ free lists */

static unsigned bin_of(uint64_t size) {
    uint64_t u = size / ALIGN;
    if (u <= SMALL_BINS) return (unsigned)u - 1;
    unsigned fl = 63u - (unsigned)__builtin_clzll(u);
    unsigned sl = (unsigned)(u >> (fl - SL_BITS)) & ((1u << SL_BITS) - 1);
    unsigned i = SMALL_BINS + (fl - 6u) * (1u << SL_BITS) + sl;
    assert(i < NBINS); /* no block exceeds the largest reserve */
    return i;
}

/* The smallest block size that lands in bin i. */
static uint64_t bin_min(unsigned i) {
    if (i < SMALL_BINS) return (uint64_t)(i + 1) * ALIGN;
    unsigned fl = 6u + (i - SMALL_BINS) / (1u << SL_BITS);
    unsigned sl = (i - SMALL_BINS) % (1u << SL_BITS);
    return (((uint64_t)1 << fl) + ((uint64_t)sl << (fl - SL_BITS))) * ALIGN;
}

static void bin_insert(arena *a, uint64_t off) {
    unsigned i = bin_of(B(a, off)->size);
    uint64_t head = a->bins[i];
    *link_next(a, off) = head;
    *link_prev(a, off) = 0;
    if (head != 0) *link_prev(a, head) = off;
    a->bins[i] = off;
    a->bitmap[i / 64] |= (uint64_t)1 << (i % 64);
}

static void bin_remove(arena *a, uint64_t off) {
    unsigned i = bin_of(B(a, off)->size);
    uint64_t next = *link_next(a, off), prev = *link_prev(a, off);
    if (prev != 0) *link_next(a, prev) = next;
    else a->bins[i] = next;
    if (next != 0) *link_prev(a, next) = prev;
    if (a->bins[i] == 0) a->bitmap[i / 64] &= ~((uint64_t)1 << (i % 64));
}

/* The first non-empty bin at or after `from`, or NBINS. */
static unsigned bin_next(const arena *a, unsigned from) {
    for (unsigned w = from / 64; w < MAP_WORDS; w++) {
        uint64_t bits = a->bitmap[w];
        if (w == from / 64) bits &= ~(uint64_t)0 << (from % 64);
        if (bits != 0) return w * 64 + (unsigned)__builtin_ctzll(bits);
    }
    return NBINS;
}

/* Take a free block of at least `size` bytes off its list; 0 if none. */
static uint64_t bin_take(arena *a, uint64_t size) {
    unsigned i = bin_of(size);
    unsigned from = i;
    if (bin_min(i) < size) {
        /* Blocks in this class may be too small: try a few, then move on to
         * the classes above, where any block fits. */
        uint64_t off = a->bins[i];
        for (int n = 0; off != 0 && n < SCAN_LIMIT; n++, off = *link_next(a, off)) {
            if (B(a, off)->size >= size) {
                bin_remove(a, off);
                return off;
            }
        }
        from = i + 1;
    }
    unsigned j = bin_next(a, from);
    if (j >= NBINS) return 0;
    uint64_t off = a->bins[j];
    bin_remove(a, off);
    return off;
}

/* ------------------------------------------------------------ allocation */

static int arena_grow(arena *a, uint64_t end) {
    uint64_t size = atomic_load_explicit(&a->file_size, memory_order_relaxed);
    uint64_t target = round_up(end, page_size());
    uint64_t step = size + GROW_STEP < a->reserve ? size + GROW_STEP : a->reserve;
    if (target < step) target = step;
    int rc;
    do {
        rc = ftruncate(g_fd, (off_t)target);
    } while (rc != 0 && errno == EINTR);
    if (rc != 0) return CREW_ENOMEM;
    CRASH_POINT(CREW__SHM_CRASH_GROWN);
    atomic_store_explicit(&a->file_size, target, memory_order_relaxed);
    return 0;
}

/* The part of a new block that needs clearing: [*zlo, *zhi) in offsets. */
typedef struct zero_range {
    uint64_t lo, hi;
} zero_range;

/* Allocate a block of `size` bytes (a multiple of ALIGN). Returns its
 * offset, or 0. Lock held. */
static uint64_t alloc_locked(arena *a, uint64_t size, zero_range *z) {
    if (a->broken) return 0;
    uint64_t off = bin_take(a, size);
    if (off != 0) {
        CRASH_POINT(CREW__SHM_CRASH_ALLOC_UNLINKED);
        blk *b = B(a, off);
        uint64_t have = b->size;
        if (have - size >= MIN_BLOCK) {
            uint64_t r = off + size;
            blk *rb = B(a, r);
            rb->magic = BLK_FREE;
            rb->flags = 0;
            rb->size = have - size;
            *footer(a, r, have - size) = have - size;
            CRASH_POINT(CREW__SHM_CRASH_ALLOC_SPLIT);
            COMMIT();
            b->size = size; /* commit: the remainder is a block of its own */
            COMMIT();
            b->magic = BLK_USED;
            bin_insert(a, r);
            /* The block after the remainder keeps PREV_FREE. */
        } else {
            size = have;
            COMMIT();
            b->magic = BLK_USED; /* commit */
            if (off + size < a->top) B(a, off + size)->flags &= ~PREV_FREE;
        }
        CRASH_POINT(CREW__SHM_CRASH_ALLOC_MARKED);
        z->lo = off + BLK_HDR;
        z->hi = off + size;
    } else {
        off = a->top;
        if (size > a->reserve - off) return 0;
        uint64_t end = off + size;
        if (end > atomic_load_explicit(&a->file_size, memory_order_relaxed) && arena_grow(a, end) != 0)
            return 0;
        uint64_t clean = a->clean_from;
        if (end > clean) a->clean_from = end; /* before anything above `clean` is written */
        COMMIT();
        blk *b = B(a, off);
        b->magic = BLK_USED;
        b->flags = 0; /* the block before `top` is never free */
        b->size = size;
        CRASH_POINT(CREW__SHM_CRASH_TOP_HEADER);
        COMMIT();
        a->top = end; /* commit */
        z->lo = off + BLK_HDR;
        z->hi = clean < end ? clean : end;
    }
    atomic_store_explicit(&a->used, atomic_load_explicit(&a->used, memory_order_relaxed) + size,
                          memory_order_relaxed);
    return off;
}

/* Checks that `off` is a live block whose neighbours look sound, so that
 * freeing it cannot spread damage. Lock held. */
static bool block_freeable(arena *a, uint64_t off) {
    uint64_t top = a->top;
    if (off < HEAP_START || off >= top) return false;
    blk *b = B(a, off);
    uint64_t size = b->size;
    if (b->magic != BLK_USED || size % ALIGN != 0 || size < MIN_BLOCK || size > top - off) return false;
    uint64_t next = off + size;
    if (next < top) {
        blk *n = B(a, next);
        if (n->magic != BLK_USED && n->magic != BLK_FREE) return false;
        if (n->size % ALIGN != 0 || n->size < MIN_BLOCK || n->size > top - next) return false;
    }
    if (b->flags & PREV_FREE) {
        if (off - HEAP_START < MIN_BLOCK) return false;
        uint64_t psize = *(uint64_t *)((char *)a + off - 8);
        if (psize % ALIGN != 0 || psize < MIN_BLOCK || psize > off - HEAP_START) return false;
        blk *p = B(a, off - psize);
        if (p->magic != BLK_FREE || p->size != psize) return false;
    }
    return true;
}

/* Free the block at `off` (checked by block_freeable). Lock held. */
static void free_locked(arena *a, uint64_t off) {
    blk *b = B(a, off);
    uint64_t size = b->size;
    COMMIT();
    b->magic = BLK_FREE; /* commit: the block is free */
    COMMIT();
    atomic_store_explicit(&a->used, atomic_load_explicit(&a->used, memory_order_relaxed) - size,
                          memory_order_relaxed);
    CRASH_POINT(CREW__SHM_CRASH_FREE_MARKED);
    uint64_t next = off + size;
    if (next < a->top && B(a, next)->magic == BLK_FREE) {
        bin_remove(a, next);
        size += B(a, next)->size;
        COMMIT();
        b->size = size; /* commit: the next block is absorbed */
        COMMIT();
        CRASH_POINT(CREW__SHM_CRASH_FREE_MERGED_NEXT);
    }
    if (b->flags & PREV_FREE) {
        uint64_t psize = *(uint64_t *)((char *)a + off - 8);
        uint64_t prev = off - psize;
        bin_remove(a, prev);
        size += psize;
        off = prev;
        b = B(a, off);
        COMMIT();
        b->size = size; /* commit: absorbed by the previous block */
        COMMIT();
        CRASH_POINT(CREW__SHM_CRASH_FREE_MERGED_PREV);
    }
    if (off + size == a->top) {
        COMMIT();
        a->top = off; /* commit: back to the wilderness */
        return;
    }
    *footer(a, off, size) = size;
    bin_insert(a, off);
    CRASH_POINT(CREW__SHM_CRASH_FREE_LISTED);
    B(a, off + size)->flags |= PREV_FREE;
}

/* After a death inside the lock: rebuild everything derived from the block
 * headers (see the comment at the top). Lock held. */
static void rebuild_locked(arena *a) {
    memset(a->bitmap, 0, sizeof a->bitmap);
    memset(a->bins, 0, sizeof a->bins);
    struct stat st;
    if (fstat(g_fd, &st) == 0 && (uint64_t)st.st_size <= a->reserve)
        atomic_store_explicit(&a->file_size, (uint64_t)st.st_size, memory_order_relaxed);
    uint64_t top = a->top;
    if (top < HEAP_START || top > atomic_load_explicit(&a->file_size, memory_order_relaxed) ||
        (top - HEAP_START) % ALIGN != 0) {
        a->broken = 1;
        return;
    }
    uint64_t used = 0, run = 0, off = HEAP_START;
    while (off < top) {
        blk *b = B(a, off);
        uint64_t size = b->size;
        if ((b->magic != BLK_USED && b->magic != BLK_FREE) || size % ALIGN != 0 || size < MIN_BLOCK ||
            size > top - off) {
            a->broken = 1;
            break;
        }
        if (b->magic == BLK_FREE) {
            if (run != 0) {
                COMMIT();
                B(a, run)->size += size; /* commit: merge with the run */
                COMMIT();
            } else {
                run = off;
                b->flags &= ~PREV_FREE;
            }
        } else {
            if (run != 0) {
                uint64_t rsize = B(a, run)->size;
                *footer(a, run, rsize) = rsize;
                bin_insert(a, run);
                b->flags |= PREV_FREE;
                run = 0;
            } else {
                b->flags &= ~PREV_FREE;
            }
            used += size;
        }
        off += size;
    }
    COMMIT();
    if (run != 0 && !a->broken) a->top = run;
    if (a->clean_from < a->top) a->clean_from = a->top;
    atomic_store_explicit(&a->used, used, memory_order_relaxed);
}

/* Take the arena's lock, repairing after a dead holder. */
static int arena_lock(arena *a) {
    int rc = crew_lock_acquire(&a->lock, CREW_FOREVER);
    if (rc == CREW_EOWNERDEAD) {
        rebuild_locked(a);
        rc = 0;
    }
    return rc;
}

static void arena_unlock(arena *a) { crew_lock_release(&a->lock); }

/* Clear [lo, hi) of the file. Large ranges are cleared by punching a hole,
 * which also gives the pages back to the system. */
static void zero_bytes(arena *a, uint64_t lo, uint64_t hi) {
    if (hi <= lo) return;
    char *base = (char *)a;
    if (hi - lo >= PUNCH_MIN) {
        uint64_t plo = round_up(lo, page_size()), phi = hi / page_size() * page_size();
        if (phi > plo && fallocate(g_fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)plo,
                                   (off_t)(phi - plo)) == 0) {
            memset(base + lo, 0, plo - lo);
            memset(base + phi, 0, hi - phi);
            return;
        }
    }
    memset(base + lo, 0, hi - lo);
}

/* ----------------------------------------------------------------- setup */

static void setup_atfork_prepare(void) { pthread_mutex_lock(&setup_mu); }
static void setup_atfork_release(void) { pthread_mutex_unlock(&setup_mu); }
static void setup_register_atfork(void) {
    pthread_atfork(setup_atfork_prepare, setup_atfork_release, setup_atfork_release);
}

int crew__shm_parse_size(const char *s, size_t *out) {
    if (s == NULL || out == NULL || *s < '0' || *s > '9') return CREW_EINVAL;
    uint64_t v = 0;
    for (; *s >= '0' && *s <= '9'; s++) {
        uint64_t digit = (uint64_t)(*s - '0');
        if (v > (UINT64_MAX - digit) / 10) return CREW_EINVAL;
        v = v * 10 + digit;
    }
    unsigned shift = 0;
    switch (*s) {
    case '\0': break;
    case 'k': case 'K': shift = 10; break;
    case 'm': case 'M': shift = 20; break;
    case 'g': case 'G': shift = 30; break;
    case 't': case 'T': shift = 40; break;
    default: return CREW_EINVAL;
    }
    if (shift != 0 && *++s != '\0') return CREW_EINVAL;
    if (v > (SIZE_MAX >> shift)) return CREW_EINVAL;
    *out = (size_t)(v << shift);
    return 0;
}

/* Create and map the arena. setup_mu held. */
static int arena_create(const crew_shm_arena_options *opts) {
    size_t reserve = opts != NULL ? opts->reserve : 0;
    if (reserve == 0) {
        const char *env = getenv("CREW_ARENA_RESERVE");
        if (env != NULL && *env != '\0' && crew__shm_parse_size(env, &reserve) != 0) return CREW_EINVAL;
    }
    bool fallback = reserve == 0;
    if (reserve == 0) reserve = DEFAULT_RESERVE;
    if (reserve < MIN_RESERVE) reserve = MIN_RESERVE;
    if (reserve > ((size_t)1 << MAX_RESERVE_BITS)) return CREW_ENOMEM;
    reserve = (size_t)round_up(reserve, page_size());

    int fd = memfd_create("crew-arena", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0) {
        int e = errno;
        if (e == ENOSYS) return CREW_ENOSYS;
        if (e == EMFILE || e == ENFILE) return CREW_EMFILE;
        return CREW_ENOMEM;
    }
    size_t initial = (size_t)round_up(HDR_AREA, page_size());
    if (ftruncate(fd, (off_t)initial) != 0) {
        close(fd);
        return CREW_ENOMEM;
    }
    /* Shrinking the file would turn live blocks into SIGBUS everywhere. */
    (void)fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_SEAL);
    void *base = mmap(NULL, reserve, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd, 0);
    /* The default reserve shrinks to what the address space allows (a
     * ulimit -v, a memory checker) down to FALLBACK_RESERVE; a reserve the
     * caller asked for does not. */
    while (base == MAP_FAILED && fallback && reserve / 4 >= FALLBACK_RESERVE) {
        reserve /= 4;
        base = mmap(NULL, reserve, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd, 0);
    }
    if (base == MAP_FAILED) {
        close(fd);
        return CREW_ENOMEM;
    }
    arena *a = base;
    int rc = crew_lock_init(&a->lock, CREW_SHARED);
    if (rc != 0) {
        munmap(base, reserve);
        close(fd);
        return rc;
    }
    a->magic = ARENA_MAGIC;
    a->reserve = reserve;
    atomic_store_explicit(&a->file_size, initial, memory_order_relaxed);
    atomic_store_explicit(&a->used, 0, memory_order_relaxed);
    a->top = HEAP_START;
    a->clean_from = HEAP_START;
    g_fd = fd;
    g_reserve = reserve;
    atomic_store_explicit(&g_arena, a, memory_order_release);
    return 0;
}

int crew_shm_setup(const crew_shm_arena_options *opts) {
    if (atomic_load_explicit(&g_arena, memory_order_acquire) != NULL) return 0;
    pthread_once(&setup_once, setup_register_atfork);
    pthread_mutex_lock(&setup_mu);
    int rc = 0;
    if (atomic_load_explicit(&g_arena, memory_order_relaxed) == NULL) rc = arena_create(opts);
    pthread_mutex_unlock(&setup_mu);
    return rc;
}

static arena *arena_get(void) {
    arena *a = atomic_load_explicit(&g_arena, memory_order_acquire);
    if (a != NULL) return a;
    if (crew_shm_setup(NULL) != 0) return NULL;
    return atomic_load_explicit(&g_arena, memory_order_acquire);
}

/* ------------------------------------------------------------- arena API */

void *crew_shm_alloc(size_t size) {
    if (size == 0) return NULL;
    arena *a = arena_get();
    if (a == NULL || size > a->reserve) return NULL;
    uint64_t bsize = round_up((uint64_t)size + BLK_HDR, ALIGN);
    if (arena_lock(a) != 0) return NULL;
    zero_range z = {0, 0};
    uint64_t off = alloc_locked(a, bsize, &z);
    arena_unlock(a);
    if (off == 0) return NULL;
    zero_bytes(a, z.lo, z.hi);
    return (char *)a + off + BLK_HDR;
}

int crew_shm_free(void *ptr) {
    if (ptr == NULL) return 0;
    arena *a = atomic_load_explicit(&g_arena, memory_order_acquire);
    if (a == NULL || !crew_shm_contains(ptr)) return CREW_EINVAL;
    uint64_t data = (uint64_t)((char *)ptr - (char *)a);
    if (data % ALIGN != 0 || data < HDR_AREA) return CREW_EINVAL;
    uint64_t off = data - BLK_HDR;
    /* A large live block gives its pages back before it is freed: done
     * outside the lock, which is safe because the block is still ours (only
     * a concurrent second free of it, a caller's bug, could race). */
    if (off < atomic_load_explicit(&a->file_size, memory_order_relaxed)) {
        blk *b = B(a, off);
        uint64_t size = b->size;
        if (b->magic == BLK_USED && size >= 2 * PUNCH_MIN && size % ALIGN == 0 &&
            size <= atomic_load_explicit(&a->file_size, memory_order_relaxed) - off) {
            uint64_t plo = round_up(off + ALIGN, page_size());
            uint64_t phi = (off + size - ALIGN) / page_size() * page_size();
            if (phi > plo)
                (void)fallocate(g_fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)plo,
                                (off_t)(phi - plo));
        }
    }
    if (arena_lock(a) != 0) return CREW_EINVAL;
    int rc = CREW_EINVAL;
    if (!a->broken && block_freeable(a, off)) {
        free_locked(a, off);
        rc = 0;
    }
    arena_unlock(a);
    return rc;
}

bool crew_shm_contains(const void *ptr) {
    arena *a = atomic_load_explicit(&g_arena, memory_order_acquire);
    if (a == NULL || ptr == NULL) return false;
    uintptr_t p = (uintptr_t)ptr, base = (uintptr_t)a;
    return p >= base && p - base < g_reserve;
}

size_t crew_shm_arena_size(void) {
    arena *a = atomic_load_explicit(&g_arena, memory_order_acquire);
    return a ? (size_t)atomic_load_explicit(&a->file_size, memory_order_relaxed) : 0;
}

size_t crew_shm_arena_used(void) {
    arena *a = atomic_load_explicit(&g_arena, memory_order_acquire);
    return a ? (size_t)atomic_load_explicit(&a->used, memory_order_relaxed) : 0;
}

/* The consistency check for tests: 0, or the number of the first failed
 * invariant. Lock held. */
static int check_locked(arena *a) {
    struct stat st;
    uint64_t fsize = atomic_load_explicit(&a->file_size, memory_order_relaxed);
    if (a->magic != ARENA_MAGIC) return 1;
    if (fstat(g_fd, &st) != 0 || (uint64_t)st.st_size != fsize) return 1;
    if (a->top < HEAP_START || a->top > fsize || fsize > a->reserve) return 2;
    if (a->clean_from < a->top) return 3;
    if (a->broken) return 4;
    uint64_t off = HEAP_START, used = 0, nfree = 0;
    bool prev_free = false;
    while (off < a->top) {
        blk *b = B(a, off);
        if ((b->magic != BLK_USED && b->magic != BLK_FREE) || b->size % ALIGN != 0 ||
            b->size < MIN_BLOCK || b->size > a->top - off)
            return 5;
        if (((b->flags & PREV_FREE) != 0) != prev_free) return 6;
        bool is_free = b->magic == BLK_FREE;
        if (is_free) {
            if (prev_free) return 7;
            if (*footer(a, off, b->size) != b->size) return 8;
            nfree++;
        } else {
            used += b->size;
        }
        prev_free = is_free;
        off += b->size;
    }
    if (prev_free) return 9;
    if (used != atomic_load_explicit(&a->used, memory_order_relaxed)) return 10;
    uint64_t listed = 0;
    for (unsigned i = 0; i < NBINS; i++) {
        bool bit = (a->bitmap[i / 64] >> (i % 64)) & 1;
        if (bit != (a->bins[i] != 0)) return 11;
        uint64_t prev = 0;
        for (uint64_t o = a->bins[i]; o != 0; prev = o, o = *link_next(a, o)) {
            if (o < HEAP_START || o >= a->top || B(a, o)->magic != BLK_FREE) return 12;
            if (bin_of(B(a, o)->size) != i) return 13;
            if (*link_prev(a, o) != prev) return 14;
            if (++listed > nfree) return 15;
        }
    }
    if (listed != nfree) return 16;
    return 0;
}

int crew__shm_arena_check(void) {
    arena *a = atomic_load_explicit(&g_arena, memory_order_acquire);
    if (a == NULL) return CREW_EINVAL;
    if (arena_lock(a) != 0) return CREW_EINVAL;
    int rc = check_locked(a);
    arena_unlock(a);
    return rc;
}

/* -------------------------------------------------------- named segments */

struct crew_shm {
    void *addr;
    size_t size;
    char name[]; /* with its leading '/' */
};

/* Validate `name` and write it with one leading '/' into full. */
static int name_make(const char *name, char full[CREW_SHM_NAME_MAX + 2]) {
    if (name == NULL) return CREW_EINVAL;
    const char *p = name[0] == '/' ? name + 1 : name;
    size_t len = strlen(p);
    if (len == 0 || memchr(p, '/', len) != NULL) return CREW_EINVAL;
    if (len > CREW_SHM_NAME_MAX) return CREW_ENAMETOOLONG;
    if (strcmp(p, ".") == 0 || strcmp(p, "..") == 0) return CREW_EINVAL;
    full[0] = '/';
    memcpy(full + 1, p, len + 1);
    return 0;
}

static int shm_errno(int e) {
    switch (e) {
    case ENOENT: return CREW_ENOENT;
    case EEXIST: return CREW_EEXIST;
    case EACCES: case EPERM: case EROFS: return CREW_EACCES;
    case ENAMETOOLONG: return CREW_ENAMETOOLONG;
    case EMFILE: case ENFILE: return CREW_EMFILE;
    case EINVAL: case EFBIG: return CREW_EINVAL;
    default: return CREW_ENOMEM; /* ENOMEM, ENOSPC, EOVERFLOW ... */
    }
}

/* Open the segment: create it (O_EXCL, so we know whether we did) or attach.
 * On success *fd_out and *created. */
static int segment_fd(const char *full, const crew_shm_options *o, int *fd_out, bool *created) {
    /* A segment that vanishes between a failed create and the attach (or
     * appears between a failed attach and the create) is retried. */
    for (int attempt = 0; attempt < 16; attempt++) {
        if (o->create) {
            int fd = shm_open(full, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
            if (fd >= 0) {
                *fd_out = fd;
                *created = true;
                return 0;
            }
            if (errno != EEXIST || o->exclusive) return shm_errno(errno);
        }
        int fd = shm_open(full, O_RDWR | O_CLOEXEC, 0);
        if (fd >= 0) {
            *fd_out = fd;
            *created = false;
            return 0;
        }
        if (errno != ENOENT || !o->create) return shm_errno(errno);
    }
    return CREW_EAGAIN;
}

int crew_shm_open(crew_shm **out, const char *name, const crew_shm_options *opts) {
    if (out == NULL) return CREW_EINVAL;
    *out = NULL;
    char full[CREW_SHM_NAME_MAX + 2];
    int rc = name_make(name, full);
    if (rc != 0) return rc;
    crew_shm_options o = opts != NULL ? *opts : (crew_shm_options){0};
    if (o.create && o.size == 0) return CREW_EINVAL;
    if (o.size > (size_t)INT64_MAX) return CREW_EINVAL;
    bool track = o.create && !o.persist;
    if (track) {
        /* Registered before it exists: see shm_tracker.c. */
        rc = crew__shm_track(full);
        if (rc != 0) return rc;
    }
    int fd = -1;
    bool created = false;
    rc = segment_fd(full, &o, &fd, &created);
    if (rc != 0) goto fail;
    if (track && !created) {
        /* Attached to a segment someone else created: not ours to track. */
        crew__shm_untrack(full);
        track = false;
    }
    size_t size = o.size;
    if (created) {
        int r;
        do {
            r = ftruncate(fd, (off_t)size);
        } while (r != 0 && errno == EINTR);
        if (r != 0) {
            rc = shm_errno(errno);
            goto fail;
        }
    } else {
        struct stat st;
        if (fstat(fd, &st) != 0) {
            rc = shm_errno(errno);
            goto fail;
        }
        /* Size 0: a segment whose creator has not sized it yet. */
        if (st.st_size <= 0 || (o.size != 0 && (uint64_t)st.st_size != o.size)) {
            rc = CREW_EINVAL;
            goto fail;
        }
        size = (size_t)st.st_size;
    }
    crew_shm *h = malloc(sizeof *h + strlen(full) + 1);
    if (h == NULL) {
        rc = CREW_ENOMEM;
        goto fail;
    }
    void *addr = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (addr == MAP_FAILED) {
        free(h);
        rc = CREW_ENOMEM;
        goto fail;
    }
    close(fd);
    h->addr = addr;
    h->size = size;
    strcpy(h->name, full);
    *out = h;
    return 0;

fail:
    if (fd >= 0) close(fd);
    if (created) shm_unlink(full);
    if (track) crew__shm_untrack(full);
    return rc;
}

void *crew_shm_addr(const crew_shm *shm) { return shm ? shm->addr : NULL; }
size_t crew_shm_size(const crew_shm *shm) { return shm ? shm->size : 0; }
const char *crew_shm_name(const crew_shm *shm) { return shm ? shm->name : NULL; }

void crew_shm_close(crew_shm *shm) {
    if (shm == NULL) return;
    munmap(shm->addr, shm->size);
    free(shm);
}

int crew_shm_unlink(const char *name) {
    char full[CREW_SHM_NAME_MAX + 2];
    int rc = name_make(name, full);
    if (rc != 0) return rc;
    if (shm_unlink(full) != 0) return shm_errno(errno);
    crew__shm_untrack(full);
    return 0;
}
