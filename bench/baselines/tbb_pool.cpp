// oneTBB baseline of bench_pool (see pool_baselines.h): empty tasks through a
// tbb::task_group inside a task_arena of the benchmark's worker count.
#include <cstdio>
#include <new>

#include <oneapi/tbb/task_arena.h>
#include <oneapi/tbb/task_group.h>
#include <oneapi/tbb/version.h>

#include "pool_baselines.h"

static tbb::task_arena *arena;

const char *tbb_pool_describe(void) {
    static char buf[96];
    std::snprintf(buf, sizeof buf, "oneTBB %d.%d (runtime interface %d)", TBB_VERSION_MAJOR,
                  TBB_VERSION_MINOR, TBB_runtime_interface_version());
    return buf;
}

int tbb_pool_init(int workers) {
    arena = new (std::nothrow) tbb::task_arena(workers);
    if (arena == nullptr)
        return -1;
    arena->initialize();
    tbb_pool_empty_tasks(1000); // start the arena's threads before timing
    return 0;
}

void tbb_pool_empty_tasks(size_t n) {
    arena->execute([n] {
        tbb::task_group g;
        for (size_t i = 0; i < n; i++)
            g.run([] { __asm__ __volatile__("" ::: "memory"); });
        g.wait();
    });
}

static void tbb_tree(tbb::task_group &g, int depth) {
    if (depth == 0) {
        __asm__ __volatile__("" ::: "memory");
        return;
    }
    g.run([&g, depth] { tbb_tree(g, depth - 1); });
    g.run([&g, depth] { tbb_tree(g, depth - 1); });
}

void tbb_pool_tree_tasks(int depth) {
    arena->execute([depth] {
        tbb::task_group g;
        tbb_tree(g, depth);
        g.wait();
    });
}

void tbb_pool_fini(void) {
    delete arena;
    arena = nullptr;
}
