/* Thread-id cache. A thread's id never changes, except that the thread which
 * calls fork() is a new thread in the child, so an atfork child handler
 * clears the forking thread's cache (the only thread that exists there). */
#include "tid.h"

#include <pthread.h>
#include <stdatomic.h>
#include <sys/syscall.h>
#include <unistd.h>

CREW__TLS int32_t crew__tid_cache;
CREW__TLS char crew__thread_anchor;

static _Atomic int32_t pid_cache;

static void tid_atfork_child(void) {
    crew__tid_cache = 0;
    atomic_store_explicit(&pid_cache, 0, memory_order_relaxed);
}

static pthread_once_t tid_once = PTHREAD_ONCE_INIT;
static void tid_register(void) { pthread_atfork(NULL, NULL, tid_atfork_child); }

int32_t crew__tid_slow(void) {
    pthread_once(&tid_once, tid_register);
    crew__tid_cache = (int32_t)syscall(SYS_gettid);
    return crew__tid_cache;
}

int32_t crew__pid(void) {
    int32_t p = atomic_load_explicit(&pid_cache, memory_order_relaxed);
    if (p == 0) {
        pthread_once(&tid_once, tid_register);
        p = (int32_t)getpid();
        atomic_store_explicit(&pid_cache, p, memory_order_relaxed);
    }
    return p;
}

int crew__smp(void) {
    /* Every thread computes the same value, so racing to store it is fine. */
    static _Atomic int smp = -1;
    int v = atomic_load_explicit(&smp, memory_order_relaxed);
    if (v < 0) {
        v = sysconf(_SC_NPROCESSORS_ONLN) > 1;
        atomic_store_explicit(&smp, v, memory_order_relaxed);
    }
    return v;
}
