/* Internal: the calling thread's kernel thread id, cached per thread. The
 * cache is cleared in a forked child (the child's thread has a new id). */
#ifndef CREW_SRC_TID_H
#define CREW_SRC_TID_H

#include <stdint.h>

/* initial-exec: a plain %fs-relative load even in the shared library, instead
 * of a __tls_get_addr call on every lock acquire. */
#define CREW__TLS _Thread_local __attribute__((tls_model("initial-exec")))

extern CREW__TLS int32_t crew__tid_cache;
int32_t crew__tid_slow(void);

static inline int32_t crew__tid(void) {
    int32_t t = crew__tid_cache;
    return t ? t : crew__tid_slow();
}

/* An identity for the calling thread that is unique within the process and,
 * unlike the kernel id, survives fork() as pthread_self() does: the thread
 * that forks is the same thread in the child. (The address of a
 * thread-local object: one instruction to compute.) */
extern CREW__TLS char crew__thread_anchor;
static inline uintptr_t crew__thread_key(void) { return (uintptr_t)&crew__thread_anchor; }

/* The calling process's id, cached (glibc no longer caches getpid); the
 * cache is reset in a forked child. */
int32_t crew__pid(void);

/* True when the machine has more than one CPU online (spinning pays). */
int crew__smp(void);

#endif
