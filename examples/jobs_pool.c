/* jobs_pool: the seed tutorial's hand-made thread pool, with crew.
 *
 * The tutorial (seeds/002, "Simple thread pool") builds a Pool class from
 * four threads, a job Queue and a result Queue of (ok, result-or-error)
 * pairs, then queues ten jobs that each sleep 3 + random() seconds:
 *     pool = Pool(4)
 *     for i in range(10): pool.job.put(job)
 * Its threads are never stopped, and nothing collects the results.
 *
 * A crew pool is that class: crew_pool_submit queues a job and returns a
 * future that carries its result or its error code, and crew_pool_free
 * waits for the jobs and stops the threads. Each job draws its sleep from
 * its own random stream (crew_pool_task_index), so the times do not
 * depend on which thread runs it.
 *
 * usage: jobs_pool [--quick]   (--quick: sleeps 100 times shorter)
 * Prints when jobs start and end, the total time against the sum of the
 * sleeps, and how many jobs slept at once; exits 1 if a job failed or no
 * two jobs ever overlapped.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include <crew.h>

#define JOBS 10
#define WORKERS 4

static atomic_int running, most_running; /* jobs sleeping at once */

/* job(): sleep 3 + random() seconds (scaled by *ctx); the result is the
 * time slept. */
static int job(const void *in, void *out, void *ctx) {
    (void)in;
    size_t index = crew_pool_task_index();
    crew_rng r;
    crew_rng_init(&r, 2026, index);
    double seconds = (3.0 + crew_rng_uniform(&r)) * *(const double *)ctx;
    printf("Starting job %zu\n", index);
    int now = atomic_fetch_add(&running, 1) + 1, most = atomic_load(&most_running);
    while (now > most && !atomic_compare_exchange_weak(&most_running, &most, now)) {
    }
    int rc = crew_sleep(seconds);
    atomic_fetch_sub(&running, 1);
    printf("exiting job %zu\n", index);
    *(double *)out = seconds;
    return rc;
}

int main(int argc, char **argv) {
    double scale = argc > 1 && strcmp(argv[1], "--quick") == 0 ? 0.01 : 1.0;
    crew_pool *pool;
    int rc = crew_pool_create(&pool, &(crew_pool_options){.workers = WORKERS});
    if (rc != 0) {
        fprintf(stderr, "jobs_pool: crew_pool_create: %s\n", crew_strerror(rc));
        return 1;
    }
    crew_future *jobs[JOBS];
    int submitted = 0;
    double t0 = crew_now();
    for (; submitted < JOBS; submitted++) {
        rc = crew_pool_submit(pool, &(crew_task){.fn = job, .out_size = sizeof(double),
                                                 .ctx = &scale},
                              &jobs[submitted]);
        if (rc != 0)
            break;
    }
    printf("Jobs created!\n");

    int failed = submitted < JOBS;
    double slept = 0.0;
    for (int i = 0; i < submitted; i++) {
        double seconds;
        int result = crew_future_get(jobs[i], &seconds, CREW_FOREVER);
        if (result == 0)
            slept += seconds;
        else
            failed = 1; /* the tutorial's (False, err) */
        crew_future_free(jobs[i]);
    }
    double elapsed = crew_now() - t0;
    crew_pool_free(pool);

    printf("%d jobs on %d threads: %.2f s, against %.2f s of sleeps one after another;"
           " at most %d at once\n",
           submitted, WORKERS, elapsed, slept, atomic_load(&most_running));
    if (failed || atomic_load(&most_running) < 2) {
        printf("WRONG\n");
        return 1;
    }
    return 0;
}
