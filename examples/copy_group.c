/* copy_group: the seed tutorial's parallel file copy, with a task group.
 *
 * The tutorial (seed 001, "The use of threads for filesystem IO") starts
 * two daemon threads that take {input: output} pairs from a Queue and copy
 * each with shutil.copy, then waits with queue.join(): two 250 MB videos
 * took 7-10 s with one thread and 4.5-5.5 s with two. Errors in a copy are
 * lost (the thread dies, join() never returns).
 *
 * crew's version runs each copy as a task of a crew_group on a thread pool:
 * crew_group_run queues it, crew_group_wait is queue.join(), and a copy
 * that fails (here: a source that does not exist) comes back from the wait
 * as its error code instead of hanging the program.
 *
 * usage: copy_group [MB] [FILES] [--quick]
 *   Makes FILES (default 2) files of MB (default 250; --quick: 4) megabytes
 *   in a new directory under $TMPDIR (or /tmp), copies them one after the
 *   other and then all at once (twice each, alternating; the best times),
 *   checks every copy, shows a failing copy, and removes the directory.
 *   Exits 1 if anything is wrong.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <crew.h>

#define MAX_FILES 64
#define BLOCK (1 << 20)

typedef struct copy_job {
    char in[256], out[256];
} copy_job;

static crew_lock print_lock; /* the tutorial's print_lock */

/* Copy in to out in blocks; 0 or -errno. (shutil.copy) */
static int copy_file(const char *in, const char *out) {
    int rc = 0, fi = open(in, O_RDONLY | O_CLOEXEC);
    if (fi < 0) return -errno;
    int fo = open(out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fo < 0) {
        rc = -errno;
        close(fi);
        return rc;
    }
    char *buf = malloc(BLOCK);
    if (!buf) rc = -ENOMEM;
    for (ssize_t n; rc == 0 && (n = read(fi, buf, BLOCK)) != 0;) {
        if (n < 0) {
            if (errno != EINTR) rc = -errno;
            continue;
        }
        for (ssize_t done = 0; rc == 0 && done < n;) {
            ssize_t w = write(fo, buf + done, (size_t)(n - done));
            if (w < 0 && errno != EINTR) rc = -errno;
            if (w > 0) done += w;
        }
    }
    free(buf);
    close(fi);
    if (close(fo) != 0 && rc == 0) rc = -errno;
    return rc;
}

/* A group's task: copy one file, saying so as the tutorial does. */
static int copy_op(void *arg) {
    copy_job *j = arg;
    char name[32] = "?";
    crew_thread_current_name(name, sizeof name);
    crew_lock_acquire(&print_lock, CREW_FOREVER);
    printf("Starting copy of %s on thread %s\n", strrchr(j->in, '/') + 1, name);
    crew_lock_release(&print_lock);
    int rc = copy_file(j->in, j->out);
    crew_lock_acquire(&print_lock, CREW_FOREVER);
    printf("Finished copy of %s: %s\n", strrchr(j->in, '/') + 1, rc == 0 ? "ok" : crew_strerror(rc));
    crew_lock_release(&print_lock);
    return rc;
}

/* Run every job in a group on pool; the group's result. */
static int copy_all(crew_pool *pool, copy_job *jobs, int n) {
    crew_group *g;
    int rc = crew_group_create(&g, pool);
    if (rc != 0) return rc;
    for (int i = 0; i < n && rc == 0; i++) rc = crew_group_run(g, copy_op, &jobs[i]);
    int wrc = crew_group_wait(g, CREW_FOREVER); /* queue.join() */
    crew_group_free(g);
    return wrc != 0 ? wrc : rc;
}

/* 0 if the two files hold the same bytes. */
static int same_file(const char *a, const char *b) {
    FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
    char *ba = malloc(BLOCK), *bb = malloc(BLOCK);
    int rc = fa && fb && ba && bb ? 0 : -1;
    while (rc == 0) {
        size_t na = fread(ba, 1, BLOCK, fa), nb = fread(bb, 1, BLOCK, fb);
        if (na != nb || memcmp(ba, bb, na) != 0) rc = -1;
        if (na < BLOCK) break;
    }
    free(ba), free(bb);
    if (fa) fclose(fa);
    if (fb) fclose(fb);
    return rc;
}

static int make_file(const char *path, size_t mb, unsigned seed) {
    FILE *f = fopen(path, "wb");
    if (!f) return -errno;
    crew_rng r;
    crew_rng_init(&r, seed, 0);
    uint32_t *block = malloc(BLOCK);
    int rc = block ? 0 : -ENOMEM;
    for (size_t m = 0; rc == 0 && m < mb; m++) {
        for (size_t i = 0; i < BLOCK / sizeof *block; i++) block[i] = crew_rng_u32(&r);
        if (fwrite(block, 1, BLOCK, f) != BLOCK) rc = -EIO;
    }
    free(block);
    if (fclose(f) != 0 && rc == 0) rc = -EIO;
    return rc;
}

int main(int argc, char **argv) {
    size_t mb = 250;
    int files = 2, pos = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0) mb = 4;
        else if (pos++ == 0) mb = strtoul(argv[i], NULL, 10);
        else files = atoi(argv[i]);
    }
    if (mb == 0 || files < 1 || files > MAX_FILES) {
        fprintf(stderr, "usage: copy_group [MB] [FILES (1-%d)] [--quick]\n", MAX_FILES);
        return 2;
    }
    const char *tmp = getenv("TMPDIR");
    char dir[200];
    snprintf(dir, sizeof dir, "%s/copy_group.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(dir)) {
        perror("copy_group: mkdtemp");
        return 1;
    }
    crew_lock_init(&print_lock, 0);
    static copy_job serial[MAX_FILES], parallel[MAX_FILES];
    int bad = 0;
    for (int i = 0; i < files && !bad; i++) {
        snprintf(serial[i].in, sizeof serial[i].in, "%s/v%d.bin", dir, i + 1);
        snprintf(serial[i].out, sizeof serial[i].out, "%s/v%d%d.bin", dir, i + 1, i + 1);
        parallel[i] = serial[i];
        snprintf(parallel[i].out, sizeof parallel[i].out, "%s/v%d%d%d.bin", dir, i + 1, i + 1, i + 1);
        int rc = make_file(serial[i].in, mb, (unsigned)i);
        if (rc != 0) {
            fprintf(stderr, "copy_group: making %s: %s\n", serial[i].in, crew_strerror(rc));
            bad = 1;
        }
    }
    crew_pool *pool = NULL;
    int rc = bad ? 0 : crew_pool_create(&pool, &(crew_pool_options){.workers = (size_t)files, .name = "copy"});
    if (rc != 0) {
        fprintf(stderr, "copy_group: crew_pool_create: %s\n", crew_strerror(rc));
        bad = 1;
    }
    if (!bad) {
        printf("%d files of %zu MB in %s\n", files, mb, dir);
        /* Twice each, alternating, best of two: the page cache and the
         * disk make single timings of file copies swing. */
        double t_serial = 1e300, t_group = 1e300;
        int prc = 0;
        for (int round = 0; round < 2 && rc == 0 && prc == 0; round++) {
            double t0 = crew_now();
            for (int i = 0; i < files && rc == 0; i++) rc = copy_file(serial[i].in, serial[i].out);
            double t1 = crew_now();
            prc = copy_all(pool, parallel, files);
            double t2 = crew_now();
            if (t1 - t0 < t_serial) t_serial = t1 - t0;
            if (t2 - t1 < t_group) t_group = t2 - t1;
        }
        if (rc != 0 || prc != 0) {
            fprintf(stderr, "copy_group: a copy failed: %s\n", crew_strerror(rc ? rc : prc));
            bad = 1;
        }
        for (int i = 0; i < files && !bad; i++) {
            if (same_file(serial[i].in, serial[i].out) != 0 || same_file(serial[i].in, parallel[i].out) != 0) {
                fprintf(stderr, "copy_group: %s was not copied right\n", serial[i].in);
                bad = 1;
            }
        }
        printf("best of 2: one after the other %.3f s; a group of %d on %d threads %.3f s (%.2fx)\n", t_serial,
               files, files, t_group, t_serial / t_group);

        /* A copy that fails: the wait returns its code (the tutorial's
         * queue.join() would wait forever for the dead thread's item). */
        copy_job missing = {0};
        snprintf(missing.in, sizeof missing.in, "%s/missing.bin", dir);
        snprintf(missing.out, sizeof missing.out, "%s/never.bin", dir);
        rc = copy_all(pool, &missing, 1);
        printf("copying a missing file: %s\n", crew_strerror(rc));
        if (rc != CREW_ENOENT) bad = 1;
    }
    crew_pool_free(pool);
    for (int i = 0; i < files; i++) {
        unlink(serial[i].in);
        unlink(serial[i].out);
        unlink(parallel[i].out);
    }
    rmdir(dir);
    crew_lock_destroy(&print_lock);
    return bad;
}
