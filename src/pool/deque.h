/* Internal: a work-stealing deque of task pointers (Chase and Lev, "Dynamic
 * circular work-stealing deque", SPAA'05, with the C11 orderings of Lê,
 * Pop, Cohen and Zappa Nardelli, PPoPP'13).
 *
 * One owner thread pushes and pops at the bottom (LIFO: the newest, hottest
 * task first); any thread steals at the top (FIFO: the oldest, usually the
 * biggest piece of a split range).
 *
 * Invariant: the live tasks are buf[top .. bottom-1] (indices taken modulo
 * the capacity). `top` only grows, by a CAS that decides which of the
 * owner's last pop and the thieves gets a contested last task. `bottom` is
 * written only by the owner. A grown buffer replaces the old one for new
 * accesses; old buffers stay allocated (listed in `retired`) until the
 * deque is destroyed, because a thief may still read a slot of one; the
 * slot it reads there holds the same task as in the new buffer, and its CAS
 * on `top` tells it whether the task is its own.
 *
 * The orderings here are seq_cst where the algorithm needs a store-load
 * fence (the owner's pop against a thief's steal) rather than stand-alone
 * fences, which ThreadSanitizer does not model.
 */
#ifndef CREW_SRC_POOL_DEQUE_H
#define CREW_SRC_POOL_DEQUE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

typedef struct crew__task crew__task;

typedef struct crew__deque_buf {
    int64_t cap;                        /* a power of two */
    struct crew__deque_buf *retired;    /* the buffer this one replaced */
    _Atomic(crew__task *) slot[];
} crew__deque_buf;

typedef struct crew__deque {
    _Alignas(64) _Atomic int64_t top;   /* thieves' end */
    _Alignas(64) _Atomic int64_t bottom; /* owner's end */
    _Atomic(crew__deque_buf *) buf;
    int64_t top_seen;                   /* owner: a past value of top (top only grows) */
} crew__deque;

#define CREW__DEQUE_ABORT ((crew__task *)1) /* a steal lost a race: retry */

static inline crew__deque_buf *crew__deque_buf_new(int64_t cap, crew__deque_buf *retired) {
    crew__deque_buf *b = malloc(sizeof *b + (size_t)cap * sizeof b->slot[0]);
    if (!b) return NULL;
    b->cap = cap;
    b->retired = retired;
    for (int64_t i = 0; i < cap; i++) atomic_init(&b->slot[i], NULL);
    return b;
}

static inline int crew__deque_init(crew__deque *d) {
    crew__deque_buf *b = crew__deque_buf_new(256, NULL);
    if (!b) return -1;
    atomic_init(&d->top, 0);
    atomic_init(&d->bottom, 0);
    atomic_init(&d->buf, b);
    d->top_seen = 0;
    return 0;
}

static inline void crew__deque_destroy(crew__deque *d) {
    crew__deque_buf *b = atomic_load_explicit(&d->buf, memory_order_relaxed);
    while (b) {
        crew__deque_buf *next = b->retired;
        free(b);
        b = next;
    }
}

/* Owner only. Returns false when the deque cannot grow (out of memory). */
static inline bool crew__deque_push(crew__deque *d, crew__task *t) {
    int64_t b = atomic_load_explicit(&d->bottom, memory_order_relaxed);
    crew__deque_buf *a = atomic_load_explicit(&d->buf, memory_order_relaxed);
    /* top only grows, so b - top_seen bounds the size: read the real top
     * (a cache line thieves write) only when that bound says full. */
    int64_t top = d->top_seen;
    if (b - top > a->cap - 1) top = d->top_seen = atomic_load_explicit(&d->top, memory_order_acquire);
    if (b - top > a->cap - 1) {
        crew__deque_buf *g = crew__deque_buf_new(a->cap * 2, a);
        if (!g) return false;
        for (int64_t i = top; i < b; i++)
            atomic_store_explicit(&g->slot[i & (g->cap - 1)],
                                  atomic_load_explicit(&a->slot[i & (a->cap - 1)], memory_order_relaxed),
                                  memory_order_relaxed);
        atomic_store_explicit(&d->buf, g, memory_order_release);
        a = g;
    }
    atomic_store_explicit(&a->slot[b & (a->cap - 1)], t, memory_order_relaxed);
    /* Publishes the slot (and the task it points to) to thieves. */
    atomic_store_explicit(&d->bottom, b + 1, memory_order_release);
    return true;
}

/* Owner only: the newest task, or NULL. */
static inline crew__task *crew__deque_pop(crew__deque *d) {
    int64_t b = atomic_load_explicit(&d->bottom, memory_order_relaxed) - 1;
    crew__deque_buf *a = atomic_load_explicit(&d->buf, memory_order_relaxed);
    /* seq_cst store then seq_cst load: the store-load order against a
     * thief's reads of top and bottom. */
    atomic_store_explicit(&d->bottom, b, memory_order_seq_cst);
    int64_t t = atomic_load_explicit(&d->top, memory_order_seq_cst);
    if (t > b) { /* empty */
        atomic_store_explicit(&d->bottom, b + 1, memory_order_relaxed);
        return NULL;
    }
    crew__task *x = atomic_load_explicit(&a->slot[b & (a->cap - 1)], memory_order_relaxed);
    if (t == b) { /* the last task: race the thieves for it */
        if (!atomic_compare_exchange_strong_explicit(&d->top, &t, t + 1, memory_order_seq_cst,
                                                     memory_order_relaxed))
            x = NULL;
        atomic_store_explicit(&d->bottom, b + 1, memory_order_relaxed);
    }
    return x;
}

/* Any thread: the oldest task, NULL when empty, or CREW__DEQUE_ABORT when
 * another thread took it first. */
static inline crew__task *crew__deque_steal(crew__deque *d) {
    int64_t t = atomic_load_explicit(&d->top, memory_order_seq_cst);
    int64_t b = atomic_load_explicit(&d->bottom, memory_order_seq_cst);
    if (t >= b) return NULL;
    crew__deque_buf *a = atomic_load_explicit(&d->buf, memory_order_acquire);
    crew__task *x = atomic_load_explicit(&a->slot[t & (a->cap - 1)], memory_order_relaxed);
    if (!atomic_compare_exchange_strong_explicit(&d->top, &t, t + 1, memory_order_seq_cst, memory_order_relaxed))
        return CREW__DEQUE_ABORT;
    return x;
}

/* Owner: how many tasks the deque holds (a snapshot: thieves may take some). */
static inline int64_t crew__deque_depth(crew__deque *d) {
    int64_t b = atomic_load_explicit(&d->bottom, memory_order_relaxed);
    if (b - d->top_seen < 256) return b - d->top_seen; /* a bound is enough below 256 */
    d->top_seen = atomic_load_explicit(&d->top, memory_order_relaxed);
    return b - d->top_seen;
}

/* Owner: whether the deque holds at least n tasks (a snapshot). Reads the
 * thieves' `top` only when the cached bound says it might. */
static inline bool crew__deque_deeper(crew__deque *d, int64_t n) {
    int64_t b = atomic_load_explicit(&d->bottom, memory_order_relaxed);
    if (b - d->top_seen < n) return false;
    d->top_seen = atomic_load_explicit(&d->top, memory_order_relaxed);
    return b - d->top_seen >= n;
}

/* Any thread: how many tasks have left the deque at the top so far (taken
 * by thieves, or the owner's last one): a counter that only grows. */
static inline int64_t crew__deque_taken(crew__deque *d) { return atomic_load_explicit(&d->top, memory_order_relaxed); }

/* A snapshot: whether the deque looks non-empty. */
static inline bool crew__deque_busy(crew__deque *d) {
    return atomic_load_explicit(&d->top, memory_order_seq_cst) <
           atomic_load_explicit(&d->bottom, memory_order_seq_cst);
}

#endif
