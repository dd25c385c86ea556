/* much_cpu_pool: the seed tutorial's map / imap / imap_unordered program.
 *
 * The tutorial (seeds/002, "Pools", data/mp-pool.py) runs
 *     def much_cpu(n): return sum(i * i for i in range(n))
 *     args_list = [2000] * 20
 *     with Pool() as p:
 *         print(p.map(much_cpu, args_list))
 *         for result in p.imap(much_cpu, args_list): print(result)
 *         print(sum(p.imap_unordered(much_cpu, args_list)))
 * and the same imap_unordered on a ThreadPool(processes=16).
 *
 * With crew all three are one pool of threads: map fills an array, imap
 * hands results back in input order, imap_unordered as they finish (with
 * each result's input index). A 16-thread pool needs no other kind. With
 * --processes the first pool is one of processes, as the tutorial's Pool()
 * is, and the results are the same.
 *
 * usage: much_cpu_pool [--processes] [--quick]   (the same small run
 * either way)
 * Exits 1 on a wrong result.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <crew.h>

#define COUNT 20

static int much_cpu(const void *in, void *out, void *ctx) {
    (void)ctx;
    long n = *(const long *)in;
    int64_t result = 0;
    for (long i = 0; i < n; i++)
        result += (int64_t)i * i;
    *(int64_t *)out = result;
    return 0;
}

/* for result in p.imap[_unordered](much_cpu, args): ... -> the sum. */
static int64_t stream(crew_pool *pool, const long *args, bool unordered, bool print) {
    crew_imap_iter *it;
    int rc = crew_pool_imap(pool, &(crew_imap){.fn = much_cpu, .in = args, .count = COUNT,
                                               .in_size = sizeof *args,
                                               .out_size = sizeof(int64_t),
                                               .unordered = unordered},
                            &it);
    if (rc != 0)
        return rc;
    int64_t result, sum = 0;
    size_t index;
    while ((rc = crew_imap_next(it, &result, &index, CREW_FOREVER)) == 0) {
        if (print)
            printf("  item %2zu: %lld\n", index, (long long)result);
        sum += result;
    }
    crew_imap_free(it);
    return rc == CREW_EOF ? sum : rc;
}

int main(int argc, char **argv) {
    crew_pool_kind kind = CREW_THREADS;
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--processes") == 0)
            kind = CREW_PROCESSES;
    const int64_t expect = 2664667000;
    long args[COUNT];
    for (int i = 0; i < COUNT; i++)
        args[i] = 2000;

    crew_pool *pool;
    /* Pool(): crew_cpu_count() workers */
    int rc = crew_pool_create(&pool, &(crew_pool_options){.kind = kind});
    if (rc != 0) {
        fprintf(stderr, "much_cpu_pool: crew_pool_create: %s\n", crew_strerror(rc));
        return 1;
    }
    int wrong = 0;

    int64_t results[COUNT];
    rc = crew_pool_map(pool, &(crew_map){.fn = much_cpu, .in = args, .in_size = sizeof *args,
                                         .out = results, .out_size = sizeof *results,
                                         .count = COUNT});
    printf("map: [");
    for (int i = 0; i < COUNT; i++) {
        printf("%lld%s", (long long)results[i], i < COUNT - 1 ? ", " : "]\n");
        wrong |= results[i] != expect;
    }
    wrong |= rc != 0;

    printf("imap, in input order:\n");
    wrong |= stream(pool, args, false, true) != COUNT * expect;
    int64_t sum = stream(pool, args, true, false);
    printf("sum(imap_unordered): %lld\n", (long long)sum);
    wrong |= sum != COUNT * expect;
    crew_pool_free(pool);

    /* with ThreadPool(processes=16) as p: for result in p.imap_unordered(...) */
    rc = crew_pool_create(&pool, &(crew_pool_options){.workers = 16});
    if (rc != 0) {
        fprintf(stderr, "much_cpu_pool: crew_pool_create: %s\n", crew_strerror(rc));
        return 1;
    }
    printf("imap_unordered on 16 threads, as they finish:\n");
    wrong |= stream(pool, args, true, true) != COUNT * expect;
    crew_pool_free(pool);

    if (wrong)
        printf("WRONG\n");
    return wrong;
}
