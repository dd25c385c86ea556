/* crew threads.
 *
 * A record (struct crew_thread) is shared by the handle the caller holds and
 * the running thread: `refs` counts both, plus short-lived references taken
 * by the at-exit joiner; the last to drop it frees it.
 *
 * The registry is the list of live threads (started, fn not yet returned),
 * guarded by `registry_mutex`. A thread leaves it just before setting its
 * `done` event, so after a join returns, active_count no longer counts it.
 * Around fork() the registry mutex is held (atfork prepare/parent), and in
 * the child every record but the forking thread's is marked finished and
 * dropped from the registry: those threads do not exist there.
 *
 * pthread resources are released exactly once, by whoever first flips
 * `reaped`: a join after `done` (pthread_join) or crew_thread_free
 * (pthread_detach).
 */
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "crew/clock.h"
#include "crew/error.h"
#include "crew/sync.h"
#include "crew/thread.h"
#include "tid.h"

enum { TIMER_WAITING, TIMER_RUNNING, TIMER_CANCELLED };

struct crew_thread {
    _Atomic int refs;
    crew_thread_fn fn;
    void *arg;
    pthread_t pt;
    long tid;                      /* written before `started` is set */
    char name[CREW_THREAD_NAME_MAX];
    bool daemon;
    bool is_timer;
    double delay;
    _Atomic int timer_state;
    crew_event cancel;             /* timer: set by crew_timer_cancel */
    crew_event started;            /* set once tid is known */
    crew_event done;               /* set after fn returned and result is stored */
    int result;                    /* written before `done` is set */
    atomic_bool reaped;
    crew_thread *prev, *next;      /* registry links; under registry_mutex */
    bool listed;                   /* in the registry; under registry_mutex */
};

static pthread_mutex_t registry_mutex = PTHREAD_MUTEX_INITIALIZER;
static crew_thread *registry_head;  /* under registry_mutex */
static int registry_count;          /* under registry_mutex */
/* In a child forked by a crew thread, that thread is the process's main
 * thread; NULL otherwise. Under registry_mutex. */
static crew_thread *main_record;
static atomic_uint name_counter;
static CREW__TLS crew_thread *tls_current;

static void registry_add_locked(crew_thread *t) {
    t->prev = NULL;
    t->next = registry_head;
    if (registry_head) registry_head->prev = t;
    registry_head = t;
    t->listed = true;
    registry_count++;
}

static void registry_remove_locked(crew_thread *t) {
    if (!t->listed) return;
    if (t->prev) t->prev->next = t->next;
    else registry_head = t->next;
    if (t->next) t->next->prev = t->prev;
    t->listed = false;
    registry_count--;
}

static void thread_unref(crew_thread *t) {
    if (atomic_fetch_sub_explicit(&t->refs, 1, memory_order_acq_rel) == 1) free(t);
}

static void atfork_prepare(void) { pthread_mutex_lock(&registry_mutex); }
static void atfork_parent(void) { pthread_mutex_unlock(&registry_mutex); }

static void atfork_child(void) {
    crew_thread *t = registry_head;
    while (t) {
        crew_thread *next = t->next;
        if (t != tls_current) {
            registry_remove_locked(t);
            t->result = 0;
            atomic_store(&t->reaped, true); /* no pthread to join here */
            crew_event_set(&t->done);
            thread_unref(t);                /* the thread's own reference */
        }
        t = next;
    }
    crew__tid_cache = 0; /* tid.c's own handler may not have run yet */
    if (tls_current) {
        tls_current->tid = (long)crew__tid();
        main_record = tls_current;
    } else {
        main_record = NULL;
    }
    pthread_mutex_unlock(&registry_mutex);
}

/* Python waits for non-daemon threads before the interpreter exits. */
static void join_at_exit(void) {
    for (;;) {
        pthread_mutex_lock(&registry_mutex);
        crew_thread *t = registry_head;
        while (t && (t->daemon || t == tls_current)) t = t->next;
        if (t) atomic_fetch_add(&t->refs, 1);
        pthread_mutex_unlock(&registry_mutex);
        if (!t) return;
        crew_thread_join(t, CREW_FOREVER, NULL);
        thread_unref(t);
    }
}

static pthread_once_t setup_once = PTHREAD_ONCE_INIT;
static void setup(void) {
    pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
    atexit(join_at_exit);
}

static int timer_body(crew_thread *t) {
    crew_event_wait(&t->cancel, t->delay);
    int expected = TIMER_WAITING;
    if (atomic_compare_exchange_strong(&t->timer_state, &expected, TIMER_RUNNING)) return t->fn(t->arg);
    return CREW_ECANCELED;
}

static void *trampoline(void *p) {
    crew_thread *t = p;
    tls_current = t;
    t->tid = (long)crew__tid();
    char osname[16]; /* the kernel keeps 15 bytes of a thread's name */
    memcpy(osname, t->name, sizeof osname - 1);
    osname[sizeof osname - 1] = '\0';
    pthread_setname_np(pthread_self(), osname);
    crew_event_set(&t->started);

    int result = t->is_timer ? timer_body(t) : t->fn(t->arg);

    t->result = result;
    pthread_mutex_lock(&registry_mutex);
    registry_remove_locked(t);
    pthread_mutex_unlock(&registry_mutex);
    crew_event_set(&t->done);
    thread_unref(t);
    return NULL;
}

static int thread_start(crew_thread **out, crew_thread_fn fn, void *arg, const crew_thread_options *opts,
                        bool is_timer, double delay) {
    static const crew_thread_options defaults = {0};
    if (out == NULL || fn == NULL) return CREW_EINVAL;
    if (opts == NULL) opts = &defaults;
    if (opts->stack_size != 0 && opts->stack_size < (size_t)PTHREAD_STACK_MIN) return CREW_EINVAL;
    pthread_once(&setup_once, setup);

    crew_thread *t = calloc(1, sizeof *t);
    if (!t) return CREW_ENOMEM;
    atomic_init(&t->refs, 2);
    t->fn = fn;
    t->arg = arg;
    t->daemon = opts->daemon;
    t->is_timer = is_timer;
    t->delay = delay;
    if (opts->name) {
        snprintf(t->name, sizeof t->name, "%s", opts->name);
    } else {
        snprintf(t->name, sizeof t->name, "Thread-%u", atomic_fetch_add(&name_counter, 1) + 1);
    }
    crew_event_init(&t->cancel, 0);
    crew_event_init(&t->started, 0);
    crew_event_init(&t->done, 0);

    pthread_attr_t attr;
    if (pthread_attr_init(&attr) != 0) {
        free(t);
        return CREW_ENOMEM;
    }
    if (opts->stack_size != 0 && pthread_attr_setstacksize(&attr, opts->stack_size) != 0) {
        pthread_attr_destroy(&attr);
        free(t);
        return CREW_EINVAL;
    }
    pthread_mutex_lock(&registry_mutex);
    registry_add_locked(t);
    pthread_mutex_unlock(&registry_mutex);
    int rc = pthread_create(&t->pt, &attr, trampoline, t);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        pthread_mutex_lock(&registry_mutex);
        registry_remove_locked(t);
        pthread_mutex_unlock(&registry_mutex);
        free(t);
        return rc == EAGAIN ? CREW_EAGAIN : -rc;
    }
    /* As Python's start(): return once the thread runs, so its id is known. */
    crew_event_wait(&t->started, CREW_FOREVER);
    *out = t;
    return 0;
}

int crew_thread_start(crew_thread **out, crew_thread_fn fn, void *arg, const crew_thread_options *opts) {
    return thread_start(out, fn, arg, opts, false, 0.0);
}

int crew_timer_start(crew_thread **out, double delay, crew_thread_fn fn, void *arg,
                     const crew_thread_options *opts) {
    if (!(delay >= 0.0)) return CREW_EINVAL;
    return thread_start(out, fn, arg, opts, true, delay);
}

int crew_timer_cancel(crew_thread *timer) {
    if (timer == NULL || !timer->is_timer) return CREW_EINVAL;
    int expected = TIMER_WAITING;
    if (!atomic_compare_exchange_strong(&timer->timer_state, &expected, TIMER_CANCELLED))
        return expected == TIMER_CANCELLED ? 0 : CREW_EBUSY;
    crew_event_set(&timer->cancel);
    return 0;
}

int crew_thread_join(crew_thread *thread, double timeout, int *result) {
    if (thread == NULL) return CREW_EINVAL;
    if (thread == tls_current) return CREW_EDEADLK;
    int rc = crew_event_wait(&thread->done, timeout);
    if (rc != 0) return rc;
    bool expected = false;
    if (atomic_compare_exchange_strong(&thread->reaped, &expected, true)) pthread_join(thread->pt, NULL);
    if (result) *result = thread->result;
    return 0;
}

bool crew_thread_is_alive(const crew_thread *thread) {
    return thread != NULL && !crew_event_is_set(&thread->done);
}

void crew_thread_free(crew_thread *thread) {
    if (thread == NULL) return;
    bool expected = false;
    if (atomic_compare_exchange_strong(&thread->reaped, &expected, true)) pthread_detach(thread->pt);
    thread_unref(thread);
}

const char *crew_thread_name(const crew_thread *thread) { return thread ? thread->name : NULL; }

long crew_thread_id(const crew_thread *thread) { return thread ? thread->tid : 0; }

bool crew_thread_daemon(const crew_thread *thread) { return thread && thread->daemon; }

crew_thread *crew_thread_current(void) { return tls_current; }

long crew_thread_current_id(void) { return (long)crew__tid(); }

int crew_thread_current_name(char *buf, size_t size) {
    if (buf == NULL && size != 0) return CREW_EINVAL;
    if (tls_current) return snprintf(buf, size, "%s", tls_current->name);
    if (crew__tid() == getpid()) return snprintf(buf, size, "MainThread");
    char osname[16] = "";
    pthread_getname_np(pthread_self(), osname, sizeof osname);
    return snprintf(buf, size, "%s", osname);
}

int crew_thread_active_count(void) {
    pthread_mutex_lock(&registry_mutex);
    int n = registry_count + (main_record ? 0 : 1);
    pthread_mutex_unlock(&registry_mutex);
    return n;
}

static void fill_info(crew_thread_info *info, const crew_thread *t, bool is_main) {
    info->id = t->tid;
    snprintf(info->name, sizeof info->name, "%s", t->name);
    info->daemon = t->daemon;
    info->main = is_main;
}

int crew_thread_enumerate(crew_thread_info *out, size_t cap) {
    if (out == NULL && cap != 0) return CREW_EINVAL;
    pthread_mutex_lock(&registry_mutex);
    size_t n = 0;
    if (main_record) {
        if (n < cap) fill_info(&out[n], main_record, true);
    } else if (n < cap) {
        out[n] = (crew_thread_info){.id = (long)getpid(), .main = true};
        snprintf(out[n].name, sizeof out[n].name, "MainThread");
    }
    n++;
    /* The registry is newest first; report in start order. */
    crew_thread *last = registry_head;
    while (last && last->next) last = last->next;
    for (crew_thread *t = last; t; t = t->prev) {
        if (t == main_record) continue;
        if (n < cap) fill_info(&out[n], t, false);
        n++;
    }
    pthread_mutex_unlock(&registry_mutex);
    return n > INT_MAX ? INT_MAX : (int)n;
}
