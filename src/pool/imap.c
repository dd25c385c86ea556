/* crew_pool_imap: results streamed in input order or as they finish, with a
 * bounded window of inputs.
 *
 * The iterator owns `nslots` slots of `chunk` items each: room for their
 * inputs (when pulled from a callback), outputs and result codes. A slot is
 * FREE, QUEUED (a task computing its items) or DONE. Only the consumer (the
 * thread in crew_imap_next / crew_imap_free) fills slots, takes input and
 * hands out results; a worker only runs a QUEUED slot's items and marks it
 * DONE under `lock` (and, unordered, appends it to `ready`). So at most
 * nslots * chunk = window items are ever held.
 *
 * Ordered: chunk k always goes to slot k % nslots, and the consumer returns
 * slot `head`'s items in order, then frees it and refills it with the next
 * chunk, so results come out in input order. Unordered: slots are refilled
 * from a free list and returned in the order they became DONE.
 *
 * Each queued slot is one unit of the pool's accepted work, counted under
 * the pool's state_lock so that a join cannot stop the workers while a
 * refill is queued (a join ends the stream with CREW_ESHUTDOWN instead).
 */
#include <stdlib.h>
#include <string.h>

#include "crew/clock.h"
#include "crew/error.h"
#include "pool/call.h"
#include "pool/pool_internal.h"
#include "sync/sync_internal.h"

enum { SLOT_FREE, SLOT_QUEUED, SLOT_DONE };

typedef struct slot {
    crew__task task;
    crew_imap_iter *it;
    size_t id;
    size_t first;              /* input index of its first item */
    size_t n;                  /* items in it */
    size_t next;               /* consumer: next item to hand out */
    int state;                 /* under it->lock */
} slot;

struct crew_imap_iter {
    crew_pool *pool;
    crew_imap m;
    size_t chunk, nslots;
    slot *slots;
    unsigned char *inbuf;      /* lazy input: nslots * chunk items */
    unsigned char *outbuf;     /* nslots * chunk items of out_size */
    int *rcs;                  /* nslots * chunk result codes */
    crew__progress progress;
    _Atomic int cancel;        /* crew_imap_free: queued items skip */

    crew_lock lock;            /* guards slot states, ready, waiting */
    crew_cond cond;            /* over lock: a slot became DONE */
    bool waiting;              /* the consumer sleeps on cond */
    size_t *ready;             /* unordered: DONE slots, in order (ring) */
    size_t ready_head, ready_len;

    /* Consumer only: */
    size_t taken;              /* items taken from the input */
    size_t chunks;             /* chunks made (ordered: the next goes to chunks % nslots) */
    size_t head;               /* ordered: the slot being handed out */
    size_t cur;                /* unordered: the slot being handed out, or SIZE_MAX */
    size_t *free_slots;        /* unordered: FREE slots (stack) */
    size_t nfree;
    size_t queued;             /* slots QUEUED or DONE, not yet freed */
    bool input_ended;
    int end_rc;                /* returned once after the last result (input error, shutdown) */
};

static unsigned char *slot_in(crew_imap_iter *it, slot *s, size_t j) {
    return it->inbuf + (s->id * it->chunk + j) * it->m.in_size;
}
static unsigned char *slot_out(crew_imap_iter *it, slot *s, size_t j) {
    return it->outbuf + (s->id * it->chunk + j) * it->m.out_size;
}

/* ---------------------------------------------------------------- worker */

/* Run slot s's items on worker w (NULL: here, in a worker process; or
 * cancel them, from terminate). */
static void slot_items(crew_imap_iter *it, slot *s, crew__worker *w, bool cancel) {
    crew_pool *pool = it->pool;
    int *rcs = it->rcs + s->id * it->chunk;
    if (cancel) {
        for (size_t j = 0; j < s->n; j++) rcs[j] = CREW_ECANCELED;
    } else {
        crew__call call = {
            .op = CREW__CALL_ITEMS,
            .fn = it->m.fn,
            .ctx = it->m.ctx,
            .in = it->inbuf ? slot_in(it, s, 0)
                  : it->m.in_size ? (const char *)it->m.in + s->first * it->m.in_size
                                  : it->m.in,
            .in_size = it->m.in_size,
            .out = it->m.out_size ? slot_out(it, s, 0) : NULL,
            .out_size = it->m.out_size,
            .first = s->first,
            .n = s->n,
            .keep_going = true,
            .rcs = rcs,
            .stop = &pool->terminating,
        };
        for (size_t j = 0; j < s->n; j++) rcs[j] = CREW_ECANCELED; /* until run */
        crew__call_run(w, &call);
    }
    if (!cancel) crew__progress_add(&it->progress, s->n);
}

static void slot_exec(crew_imap_iter *it, slot *s) { slot_items(it, s, NULL, false); }

static void slot_run(crew__task *task, crew__worker *w) {
    slot *s = (slot *)task;
    crew_imap_iter *it = s->it;
    crew_pool *pool = it->pool;
    slot_items(it, s, w, w == NULL || atomic_load(&pool->terminating) || atomic_load(&it->cancel));
    crew_lock_acquire(&it->lock, CREW_FOREVER);
    s->state = SLOT_DONE;
    if (it->m.unordered) it->ready[(it->ready_head + it->ready_len++) % it->nslots] = s->id;
    if (it->waiting) crew_cond_notify(&it->cond, 1);
    crew_lock_release(&it->lock);
    /* The iterator may be gone from here on. */
    crew__pool_notify(pool);
    crew__pool_done(pool);
}

/* -------------------------------------------------------------- consumer */

/* Queue slot s as a task; false (and end_rc set) when the pool no longer
 * runs work. */
static bool slot_queue(crew_imap_iter *it, slot *s) {
    crew_pool *pool = it->pool;
    int rc = 0;
    if (crew__proc_child(pool)) { /* nested in a worker process: run it now */
        s->state = SLOT_QUEUED;
        it->queued++;
        slot_exec(it, s);
        s->state = SLOT_DONE;
        if (it->m.unordered) it->ready[(it->ready_head + it->ready_len++) % it->nslots] = s->id;
        return true;
    }
    crew_lock_acquire(&pool->state_lock, CREW_FOREVER);
    if (pool->joined) rc = CREW_ESHUTDOWN;
    else if (atomic_load(&pool->terminating)) rc = CREW_ECANCELED;
    else crew__pool_count(pool); /* this imap was accepted before any close */
    crew_lock_release(&pool->state_lock);
    if (rc == 0) {
        s->state = SLOT_QUEUED; /* no worker sees s before the push */
        rc = crew__pool_push(pool, &s->task);
        if (rc != 0) crew__pool_done(pool);
    }
    if (rc != 0) {
        s->state = SLOT_FREE;
        it->end_rc = rc;
        it->input_ended = true;
        return false;
    }
    it->queued++;
    return true;
}

/* Take up to a chunk of input into slot s; returns how many. */
static size_t take_input(crew_imap_iter *it, slot *s) {
    size_t n = 0;
    s->first = it->taken;
    while (n < it->chunk && !it->input_ended) {
        if (it->m.input) {
            int rc = it->m.input(slot_in(it, s, n), it->taken, it->m.input_arg);
            if (rc <= 0) {
                it->input_ended = true;
                if (rc < 0) it->end_rc = rc;
                break;
            }
        } else if (it->taken == it->m.count) {
            it->input_ended = true;
            break;
        }
        it->taken++;
        n++;
    }
    if (it->input_ended && it->m.input) {
        atomic_store(&it->progress.total, it->taken);
        crew__progress_add(&it->progress, 0);
    }
    return n;
}

/* Fill every free slot from the input. */
static void fill(crew_imap_iter *it) {
    while (!it->input_ended && atomic_load(&it->cancel) == 0) {
        slot *s;
        if (it->m.unordered) {
            if (it->nfree == 0) return;
            s = &it->slots[it->free_slots[it->nfree - 1]];
        } else {
            if (it->queued == it->nslots) return;
            s = &it->slots[it->chunks % it->nslots];
        }
        size_t n = take_input(it, s);
        if (n == 0) return;
        s->n = n;
        s->next = 0;
        if (!slot_queue(it, s)) return;
        it->chunks++;
        if (it->m.unordered) it->nfree--;
    }
}

/* What the consumer waits for: the head slot (ordered), any ready slot
 * (unordered), or (draining) no queued slot left. */
static bool ready_now(crew_imap_iter *it) {
    if (it->m.unordered) return it->ready_len > 0;
    return it->slots[it->head].state == SLOT_DONE;
}

static bool ready_pred(void *arg) {
    crew_imap_iter *it = arg;
    crew_lock_acquire(&it->lock, CREW_FOREVER);
    bool ok = ready_now(it);
    crew_lock_release(&it->lock);
    return ok;
}

static int wait_ready(crew_imap_iter *it, const crew__deadline *d) {
    crew__worker *w = crew__pool_self(it->pool);
    if (w) return crew__pool_help(w, ready_pred, it, d);
    int rc = 0;
    crew_lock_acquire(&it->lock, CREW_FOREVER);
    while (!ready_now(it)) {
        if (d->is_try) {
            rc = CREW_ETIMEDOUT;
            break;
        }
        it->waiting = true;
        int r = crew__cond_wait_dl(&it->cond, d);
        it->waiting = false;
        if (r == CREW_ETIMEDOUT && !ready_now(it)) {
            rc = CREW_ETIMEDOUT;
            break;
        }
    }
    crew_lock_release(&it->lock);
    return rc;
}

/* Hand out one item of slot s; frees the slot after its last item. */
static int hand_out(crew_imap_iter *it, slot *s, void *out, size_t *index) {
    size_t j = s->next++;
    if (out && it->m.out_size) memcpy(out, slot_out(it, s, j), it->m.out_size);
    if (index) *index = s->first + j;
    int rc = it->rcs[s->id * it->chunk + j];
    if (s->next == s->n) {
        s->state = SLOT_FREE; /* DONE slots are the consumer's */
        it->queued--;
        if (it->m.unordered) {
            it->free_slots[it->nfree++] = s->id;
            it->cur = SIZE_MAX;
        } else {
            it->head = (it->head + 1) % it->nslots;
        }
        fill(it);
    }
    return rc;
}

int crew_imap_next(crew_imap_iter *it, void *out, size_t *index, double timeout) {
    if (!it) return CREW_EINVAL;
    crew__deadline d;
    int rc = crew__deadline_init(&d, timeout);
    if (rc != 0) return rc;
    if (it->pool->pid != crew__pid() && !crew__proc_child(it->pool)) return CREW_ECHILD;
    if (it->m.unordered && it->cur != SIZE_MAX) return hand_out(it, &it->slots[it->cur], out, index);
    fill(it);
    if (it->queued == 0) {
        rc = it->end_rc;
        it->end_rc = 0;
        return rc != 0 ? rc : CREW_EOF;
    }
    rc = wait_ready(it, &d);
    if (rc != 0) return rc;
    if (it->m.unordered) {
        crew_lock_acquire(&it->lock, CREW_FOREVER);
        it->cur = it->ready[it->ready_head];
        it->ready_head = (it->ready_head + 1) % it->nslots;
        it->ready_len--;
        crew_lock_release(&it->lock);
        return hand_out(it, &it->slots[it->cur], out, index);
    }
    return hand_out(it, &it->slots[it->head], out, index);
}

/* No slot is QUEUED any more. */
static bool drained(void *arg) {
    crew_imap_iter *it = arg;
    crew_lock_acquire(&it->lock, CREW_FOREVER);
    bool ok = true;
    for (size_t id = 0; id < it->nslots && ok; id++) ok = it->slots[id].state != SLOT_QUEUED;
    crew_lock_release(&it->lock);
    return ok;
}

void crew_imap_free(crew_imap_iter *it) {
    if (!it) return;
    if (it->pool->pid == crew__pid() && it->queued && !crew__proc_child(it->pool)) {
        /* Queued items are skipped unless already running; wait for them. */
        atomic_store(&it->cancel, 1);
        crew__deadline forever = {.ns = INT64_MAX, .is_try = false};
        crew__worker *w = crew__pool_self(it->pool);
        if (w) {
            crew__pool_help(w, drained, it, &forever);
        } else {
            while (!drained(it)) {
                crew_lock_acquire(&it->lock, CREW_FOREVER);
                it->waiting = true;
                bool queued = false;
                for (size_t id = 0; id < it->nslots; id++) queued |= it->slots[id].state == SLOT_QUEUED;
                if (queued) crew__cond_wait_dl(&it->cond, &forever);
                it->waiting = false;
                crew_lock_release(&it->lock);
            }
        }
    }
    crew_cond_destroy(&it->cond);
    crew_lock_destroy(&it->lock);
    free(it->slots);
    free(it->inbuf);
    free(it->outbuf);
    free(it->rcs);
    free(it->ready);
    free(it->free_slots);
    free(it);
}

int crew_pool_imap(crew_pool *pool, const crew_imap *imap, crew_imap_iter **out) {
    if (!pool || !imap || !out || !imap->fn) return CREW_EINVAL;
    if (!imap->input && imap->count && imap->in_size && !imap->in) return CREW_EINVAL;
    if (imap->input && imap->in_size == 0) return CREW_EINVAL;
    if (pool->pid != crew__pid() && !crew__proc_child(pool)) return CREW_ECHILD;
    if (atomic_load(&pool->closed) && !crew__pool_self(pool) && !crew__proc_child(pool)) return CREW_ESHUTDOWN;
    crew_imap_iter *it = calloc(1, sizeof *it);
    if (!it) return CREW_ENOMEM;
    it->pool = pool;
    it->m = *imap;
    it->chunk = imap->chunk_size ? imap->chunk_size : 1;
    size_t window = imap->window ? imap->window : 8 * it->chunk * pool->nworkers;
    it->nslots = window / it->chunk ? window / it->chunk : 1;
    size_t items = it->nslots * it->chunk;
    it->slots = calloc(it->nslots, sizeof *it->slots);
    it->rcs = calloc(items, sizeof *it->rcs);
    it->ready = calloc(it->nslots, sizeof *it->ready);
    it->free_slots = calloc(it->nslots, sizeof *it->free_slots);
    if (imap->input) it->inbuf = malloc(items * imap->in_size);
    if (imap->out_size) it->outbuf = malloc(items * imap->out_size);
    crew_lock_init(&it->lock, 0);
    crew_cond_init(&it->cond, &it->lock, 0);
    if (!it->slots || !it->rcs || !it->ready || !it->free_slots || (imap->input && !it->inbuf) ||
        (imap->out_size && !it->outbuf)) {
        crew_imap_free(it);
        return CREW_ENOMEM;
    }
    for (size_t i = 0; i < it->nslots; i++) {
        it->slots[i] = (slot){.task = {slot_run}, .it = it, .id = i, .state = SLOT_FREE};
        it->free_slots[i] = it->nslots - 1 - i;
    }
    it->nfree = it->nslots;
    it->cur = SIZE_MAX;
    crew__progress_init(&it->progress, imap->progress, imap->progress_arg, imap->input ? 0 : imap->count);
    fill(it);
    *out = it;
    return 0;
}
