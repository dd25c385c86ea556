/* rand_string: seed 004's random strings made by four processes.
 *
 * seeds/004 ("The Process class") generates a random string in each of
 * four processes and collects them through a queue once all have ended:
 *     def rand_string(length, output):
 *         rand_str = ''.join(random.choice(string.ascii_lowercase
 *                            + string.ascii_uppercase + string.digits)
 *                            for i in range(length))
 *         output.put(rand_str)
 *     output = mp.Queue()
 *     processes = [mp.Process(target=rand_string, args=(5, output))
 *                  for x in range(4)]
 *     for p in processes: p.start()
 *     for p in processes: p.join()
 *     results = [output.get() for p in processes]
 *
 * A crew queue carries fixed-size items, so an item here is a char[8]
 * holding up to 7 characters and a NUL. The queue is CREW_SHARED and made
 * before the children start. Joining before reading is safe with crew:
 * a put has stored the item in shared memory when it returns (Python's
 * docs warn that joining a process before its queued items are read can
 * deadlock). Each child draws from its own random stream, (seed, child
 * number), so four children never make the same string by sharing the
 * parent's random state.
 *
 * usage: rand_string [SEED] [--quick]   (SEED: default from the clock;
 * --quick changes nothing, the run is small)
 * Exits 1 if a string is missing or malformed.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <crew.h>

#define NPROCS 4
#define LENGTH 5

typedef struct job {
    crew_queue *output;
    uint64_t seed;
    int number;
} job;

static const char alphabet[] = "abcdefghijklmnopqrstuvwxyz"
                               "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                               "0123456789";

static int rand_string(void *arg) {
    const job *j = arg;
    crew_rng r;
    crew_rng_init(&r, j->seed, (uint64_t)j->number);
    char s[8] = {0};
    for (int i = 0; i < LENGTH; i++)
        s[i] = alphabet[crew_rng_below(&r, sizeof alphabet - 1)];
    return crew_queue_put(j->output, s, CREW_FOREVER) == 0 ? 0 : 1;
}

int main(int argc, char **argv) {
    uint64_t seed = (uint64_t)(crew_now() * 1e9);
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--quick") != 0)
            seed = strtoull(argv[i], NULL, 10);

    crew_queue *output;
    int rc = crew_queue_create(&output, &(crew_queue_options){.item_size = 8,
                                                              .capacity = NPROCS,
                                                              .flags = CREW_SHARED});
    if (rc != 0) {
        fprintf(stderr, "rand_string: crew_queue_create: %s\n", crew_strerror(rc));
        return 1;
    }
    job jobs[NPROCS];
    crew_process *processes[NPROCS];
    for (int i = 0; i < NPROCS; i++) {
        jobs[i] = (job){output, seed, i};
        if ((rc = crew_process_start(&processes[i], rand_string, &jobs[i], NULL)) != 0) {
            fprintf(stderr, "rand_string: crew_process_start: %s\n", crew_strerror(rc));
            return 1;
        }
    }
    for (int i = 0; i < NPROCS; i++) {
        crew_process_join(processes[i], CREW_FOREVER);
        crew_process_free(processes[i]);
    }
    /* results = [output.get() for p in processes] */
    char results[NPROCS][8];
    int ok = 1;
    printf("[");
    for (int i = 0; i < NPROCS; i++) {
        if (crew_queue_get(output, results[i], 0) != 0) {
            ok = 0; /* a child failed before its put */
            break;
        }
        printf("'%s'%s", results[i], i < NPROCS - 1 ? ", " : "");
        ok &= strlen(results[i]) == LENGTH && strspn(results[i], alphabet) == LENGTH;
    }
    printf("]\n");
    crew_queue_free(output);
    if (!ok)
        printf("WRONG\n");
    return ok ? 0 : 1;
}
