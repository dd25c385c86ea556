/* The per-thread block cache (block_cache.h), with a shared depot.
 *
 * Each thread keeps one singly linked free list per size class in
 * thread-local storage: allocating and freeing there takes no
 * synchronisation. Blocks often die on another thread than the one that
 * made them (a task record is made by the thread that queues it and freed
 * by the worker that runs it), so one thread's list would grow while
 * another's stays empty and falls back on malloc. The depot evens that
 * out, a magazine at a time (Bonwick and Adams, "Magazines and Vmem",
 * USENIX 2001): a thread whose list reaches 2 * MAG blocks hands MAG of
 * them to the depot as one magazine, and a thread whose list is empty
 * takes a magazine from the depot before it calls malloc. One short lock
 * round trip moves MAG blocks.
 *
 * Invariants: a thread's list holds at most 2 * MAG blocks per class; the
 * depot holds at most DEPOT_MAX magazines per class (more are freed), each
 * a list of exactly MAG blocks, chained through their first block's
 * `next_mag`. A forked child starts with an empty depot (pthread_atfork):
 * its copy of the lock may be held by a thread that does not exist there.
 * A thread's list goes to the depot, or is freed, when the thread exits. */
#include "block_cache.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "sync/sync_internal.h"
#include "tid.h"

#if defined(__SANITIZE_ADDRESS__)
#define CREW__BLOCK_CACHE 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CREW__BLOCK_CACHE 0
#endif
#endif
#ifndef CREW__BLOCK_CACHE
#define CREW__BLOCK_CACHE 1
#endif

#if CREW__BLOCK_CACHE
enum { CLASSES = 2, MAG = 64, DEPOT_MAX = 64 };

typedef struct block {
    struct block *next;     /* in a list */
    struct block *next_mag; /* first block of a magazine in the depot */
} block;

static const size_t class_size[CLASSES] = {CREW__BLOCK_SMALL, CREW__BLOCK_LARGE};

static CREW__TLS block *cache_head[CLASSES];
static CREW__TLS unsigned cache_len[CLASSES];
static CREW__TLS unsigned char cache_armed; /* the exit-time drain is set up */
static pthread_key_t cache_key;
static pthread_once_t cache_once = PTHREAD_ONCE_INIT;

static struct {
    _Atomic uint32_t lock;          /* crew__mutex_lock */
    block *mags[CLASSES];           /* stacks of magazines (under lock) */
    _Atomic unsigned nmags[CLASSES]; /* written under lock; peeked without */
} depot;
static pthread_once_t depot_once = PTHREAD_ONCE_INIT;

/* In a forked child: the depot's lock may have been held by a thread that
 * does not exist there, and its lists be half changed; start empty (the
 * parent's magazines stay allocated in the child's copy, unreachable). */
static void depot_forget(void) {
    atomic_store_explicit(&depot.lock, 0, memory_order_relaxed);
    for (int c = 0; c < CLASSES; c++) {
        depot.mags[c] = NULL;
        atomic_store_explicit(&depot.nmags[c], 0, memory_order_relaxed);
    }
}

static void depot_setup(void) { pthread_atfork(NULL, NULL, depot_forget); }

static void depot_lock(void) {
    pthread_once(&depot_once, depot_setup);
    crew__mutex_lock(&depot.lock, false);
}

static void free_list(block *b) {
    while (b) {
        block *next = b->next;
        free(b);
        b = next;
    }
}

/* Hand the first MAG blocks of the thread's list c to the depot. */
static void depot_put(int c) {
    block *mag = cache_head[c], *last = mag;
    for (int i = 1; i < MAG; i++) last = last->next;
    cache_head[c] = last->next;
    cache_len[c] -= MAG;
    last->next = NULL;
    depot_lock();
    unsigned n = atomic_load_explicit(&depot.nmags[c], memory_order_relaxed);
    bool kept = n < DEPOT_MAX;
    if (kept) {
        mag->next_mag = depot.mags[c];
        depot.mags[c] = mag;
        atomic_store_explicit(&depot.nmags[c], n + 1, memory_order_relaxed);
    }
    crew__mutex_unlock(&depot.lock, false);
    if (!kept) free_list(mag);
}

/* Refill the thread's empty list c with a magazine; false if none. */
static bool depot_get(int c) {
    if (atomic_load_explicit(&depot.nmags[c], memory_order_relaxed) == 0) return false; /* a hint */
    depot_lock();
    block *mag = depot.mags[c];
    if (mag) {
        depot.mags[c] = mag->next_mag;
        atomic_store_explicit(&depot.nmags[c], atomic_load_explicit(&depot.nmags[c], memory_order_relaxed) - 1,
                              memory_order_relaxed);
    }
    crew__mutex_unlock(&depot.lock, false);
    if (!mag) return false;
    cache_head[c] = mag;
    cache_len[c] = MAG;
    return true;
}

static void cache_drain(void *unused) {
    (void)unused;
    for (int c = 0; c < CLASSES; c++) {
        while (cache_len[c] >= MAG) depot_put(c); /* for the threads that go on */
        free_list(cache_head[c]);
        cache_head[c] = NULL;
        cache_len[c] = 0;
    }
    cache_armed = 0;
}

static void cache_key_create(void) { pthread_key_create(&cache_key, cache_drain); }

static int class_of(size_t size) { return size <= CREW__BLOCK_SMALL ? 0 : size <= CREW__BLOCK_LARGE ? 1 : -1; }

void *crew__block_alloc(size_t size) {
    int c = class_of(size);
    if (c < 0) return malloc(size);
    block *b = cache_head[c];
    if (!b && depot_get(c)) b = cache_head[c];
    if (b) {
        cache_head[c] = b->next;
        cache_len[c]--;
        return b;
    }
    return malloc(class_size[c]);
}

void crew__block_free(void *p, size_t size) {
    int c = class_of(size);
    if (c < 0) {
        free(p);
        return;
    }
    if (!cache_armed) {
        /* The thread's first cached block: arrange the drain at exit. */
        pthread_once(&cache_once, cache_key_create);
        pthread_setspecific(cache_key, (void *)1);
        cache_armed = 1;
    }
    block *b = p;
    b->next = cache_head[c];
    cache_head[c] = b;
    if (++cache_len[c] >= 2 * MAG) depot_put(c);
}
#else
void *crew__block_alloc(size_t size) { return malloc(size); }
void crew__block_free(void *p, size_t size) {
    (void)size;
    free(p);
}
#endif
