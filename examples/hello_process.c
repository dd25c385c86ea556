/* hello_process: the seed tutorials' first multiprocessing.Process programs.
 *
 * seeds/003 ("multiprocessing") starts two processes that print their pid:
 *     def func():
 *         print "hello from process %s" % os.getpid()
 *         time.sleep(1)
 *     proc = multiprocessing.Process(target=func, args=()); proc.start()
 *     proc = multiprocessing.Process(target=func, args=()); proc.start()
 * seeds/000 ("MultiProcessing Module") runs print_time in a process and
 * looks at it from the parent:
 *     test_process = multiprocessing.Process(target=print_time,
 *                                            args=('Test', 1.5, 3))
 *     test_process.start()
 *     print "Name: ", test_process.name        # Process-1
 *     print "Active: ", test_process.is_alive()  # True
 *
 * With crew the argument tuple is a struct; the child is a fork of this
 * process, so a pointer to the struct is valid there as it is. The parent
 * starts seed 000's process first (so it is Process-1, as there), then
 * seed 003's two, joins all three and checks their exit codes (0).
 *
 * usage: hello_process [--quick]   (--quick: sleeps 10 times shorter)
 * Exits 1 if a child failed or the parent saw the wrong name or state.
 */
#define _POSIX_C_SOURCE 200809L /* ctime_r */

#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <crew.h>

/* seeds/003's func. */
static int func(void *arg) {
    printf("hello from process %d\n", (int)getpid());
    return crew_sleep(*(const double *)arg) == 0 ? 0 : 1;
}

typedef struct print_args {
    const char *name;
    double delay;
    int counter;
} print_args;

/* seeds/000's print_time(name, delay, counter). */
static int print_time(void *arg) {
    const print_args *a = arg;
    for (int i = 0; i < a->counter; i++) {
        if (crew_sleep(a->delay) != 0)
            return 1;
        time_t now = time(NULL);
        char when[32];
        printf("%s: %s", a->name, ctime_r(&now, when)); /* ctime ends in '\n' */
        fflush(stdout);
    }
    return 0;
}

/* Join p and report whether it exited with status 0. */
static bool joined_ok(crew_process *p) {
    int code = -1;
    return crew_process_join(p, 60.0) == 0 && crew_process_exitcode(p, &code) == 0 && code == 0;
}

int main(int argc, char **argv) {
    bool quick = argc > 1 && strcmp(argv[1], "--quick") == 0;
    double sleep_s = quick ? 0.1 : 1.0;
    bool ok = true;

    print_args args = {"Test", quick ? 0.15 : 1.5, 3};
    crew_process *test_process;
    int rc = crew_process_start(&test_process, print_time, &args, NULL);
    if (rc != 0) {
        fprintf(stderr, "hello_process: crew_process_start: %s\n", crew_strerror(rc));
        return 1;
    }
    const char *name = crew_process_name(test_process);
    bool alive = crew_process_is_alive(test_process);
    printf("Name:  %s\n", name);
    printf("Active:  %s\n", alive ? "True" : "False");
    ok = strcmp(name, "Process-1") == 0 && alive;

    crew_process *procs[2];
    for (int i = 0; i < 2; i++) {
        if ((rc = crew_process_start(&procs[i], func, &sleep_s, NULL)) != 0) {
            fprintf(stderr, "hello_process: crew_process_start: %s\n", crew_strerror(rc));
            return 1;
        }
    }

    for (int i = 0; i < 2; i++) {
        ok &= joined_ok(procs[i]);
        crew_process_free(procs[i]);
    }
    ok &= joined_ok(test_process);
    printf("Active after join:  %s\n", crew_process_is_alive(test_process) ? "True" : "False");
    crew_process_free(test_process);
    if (!ok)
        printf("WRONG\n");
    return ok ? 0 : 1;
}
