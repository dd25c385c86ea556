/* sum_queue: the first tutorial's processes that report through a Queue.
 *
 * seeds/000 ("MultiProcessing Module") sums two ranges in two processes,
 * each putting its sum on a multiprocessing.Queue that the parent reads:
 *     q = multiprocessing.Queue()
 *     def sum_queue(a, b):
 *         su = 0
 *         for i in range(a, b): su += i
 *         q.put(su)
 *     p1 = multiprocessing.Process(target=sum_queue, args=(1, 1*10**6))
 *     p2 = multiprocessing.Process(target=sum_queue, args=(1*10**6, 1*10**7))
 *     p1.start(); p2.start()
 *     r1 = q.get(); r2 = q.get()
 *     print r1, r2, r1+r2           # 499999500000 49499995500000 49999995000000
 *
 * In crew the queue is a CREW_SHARED crew_queue of longs, created (in the
 * shared arena) before the children are started, so the pointer they
 * inherit names the same queue. A put copies the sum into shared memory
 * and returns: there is no feeder thread, so a child may exit at once.
 *
 * usage: sum_queue [--quick]   (the same small run either way)
 * Exits 1 on a wrong sum.
 */
#include <stdio.h>

#include <crew.h>

static crew_queue *q; /* set before any child starts */

typedef struct span {
    long a, b;
} span;

static int sum_queue(void *arg) {
    const span *s = arg;
    long su = 0;
    for (long i = s->a; i < s->b; i++)
        su += i;
    return crew_queue_put(q, &su, CREW_FOREVER) == 0 ? 0 : 1;
}

int main(void) {
    int rc = crew_queue_create(&q, &(crew_queue_options){.item_size = sizeof(long),
                                                         .flags = CREW_SHARED});
    if (rc != 0) {
        fprintf(stderr, "sum_queue: crew_queue_create: %s\n", crew_strerror(rc));
        return 1;
    }
    span spans[2] = {{1, 1000000}, {1000000, 10000000}};
    crew_process *p[2];
    for (int i = 0; i < 2; i++) {
        if ((rc = crew_process_start(&p[i], sum_queue, &spans[i], NULL)) != 0) {
            fprintf(stderr, "sum_queue: crew_process_start: %s\n", crew_strerror(rc));
            return 1;
        }
    }
    /* r1 = q.get(); r2 = q.get() -- in the order the children finished. A
     * timeout, unlike Python's get(), so a child that died cannot hang us. */
    long r[2] = {0, 0};
    for (int i = 0; i < 2 && rc == 0; i++)
        rc = crew_queue_get(q, &r[i], 60.0);
    if (rc != 0)
        fprintf(stderr, "sum_queue: crew_queue_get: %s\n", crew_strerror(rc));
    printf("%ld %ld %ld\n", r[0], r[1], r[0] + r[1]);
    printf("empty: %s\n", crew_queue_empty(q) ? "True" : "False");
    for (int i = 0; i < 2; i++) {
        crew_process_join(p[i], CREW_FOREVER);
        crew_process_free(p[i]);
    }
    crew_queue_free(q);

    long small = 499999500000L, big = 49499995500000L;
    int ok = rc == 0 && ((r[0] == small && r[1] == big) || (r[0] == big && r[1] == small));
    if (!ok)
        printf("WRONG\n");
    return ok ? 0 : 1;
}
