/* The per-thread block cache (block_cache.h).
 *
 * Each thread keeps one singly linked free list per size class in
 * thread-local storage; nothing here is shared between threads, so there is
 * no synchronisation. Bound per class: CACHE_MAX blocks. */
#include "block_cache.h"

#include <pthread.h>
#include <stdlib.h>

#include "tid.h"

#define CACHE_MAX 512

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
typedef struct block {
    struct block *next;
} block;

enum { CLASSES = 2 };
static const size_t class_size[CLASSES] = {CREW__BLOCK_SMALL, CREW__BLOCK_LARGE};

static CREW__TLS block *cache_head[CLASSES];
static CREW__TLS unsigned cache_len[CLASSES];
static CREW__TLS unsigned char cache_armed; /* the exit-time drain is set up */
static pthread_key_t cache_key;
static pthread_once_t cache_once = PTHREAD_ONCE_INIT;

static void cache_drain(void *unused) {
    (void)unused;
    for (int c = 0; c < CLASSES; c++) {
        while (cache_head[c]) {
            block *b = cache_head[c];
            cache_head[c] = b->next;
            free(b);
        }
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
    if (b) {
        cache_head[c] = b->next;
        cache_len[c]--;
        return b;
    }
    return malloc(class_size[c]);
}

void crew__block_free(void *p, size_t size) {
    int c = class_of(size);
    if (c < 0 || cache_len[c] >= CACHE_MAX) {
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
    cache_len[c]++;
}
#else
void *crew__block_alloc(size_t size) { return malloc(size); }
void crew__block_free(void *p, size_t size) {
    (void)size;
    free(p);
}
#endif
