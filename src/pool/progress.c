/* Progress reporting for map, for, reduce and imap, and the ready-made
 * progress bar.
 *
 * Workers add finished items to `done` (atomic). A report is made by
 * whichever thread wins `busy`; the others skip theirs, except the one that
 * brings done to total, which waits for `busy` so the final report is never
 * lost. `reported` is only touched while holding `busy`, so reports never
 * overlap and never go backwards.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "crew/clock.h"
#include "futex.h"
#include "pool/pool_internal.h"

void crew__progress_init(crew__progress *p, crew_progress_fn fn, void *arg, size_t total) {
    p->fn = fn;
    p->arg = arg;
    atomic_init(&p->total, total);
    atomic_init(&p->done, 0);
    atomic_init(&p->busy, 0);
    p->reported = 0;
    p->final_sent = false;
}

void crew__progress_add(crew__progress *p, size_t n) {
    if (!p->fn) return;
    size_t done = atomic_fetch_add(&p->done, n) + n;
    size_t total = atomic_load(&p->total);
    bool final = total != 0 && done == total;
    for (;;) {
        int expected = 0;
        if (atomic_compare_exchange_strong(&p->busy, &expected, 1)) break;
        if (!final) return;
        crew__cpu_relax();
    }
    size_t now = atomic_load(&p->done);
    total = atomic_load(&p->total);
    bool last = total != 0 && now == total;
    if (now > p->reported || (last && !p->final_sent)) {
        p->reported = now;
        p->final_sent = last;
        p->fn(now, total, p->arg);
    }
    atomic_store(&p->busy, 0);
}

/* The bar's state: one bar is drawn at a time (by whichever thread reports
 * under the caller's serialisation); `last` rate-limits redraws. */
static _Atomic long long last_draw_ms = 0;

void crew_progress_bar(size_t done, size_t total, void *arg) {
    if (!isatty(STDERR_FILENO)) return;
    const char *label = arg ? (const char *)arg : "";
    bool end = total != 0 && done >= total;
    long long now = (long long)(crew_now() * 1000.0);
    if (!end && now - atomic_load(&last_draw_ms) < 100) return;
    atomic_store(&last_draw_ms, now);
    char line[160];
    int len;
    if (total == 0) {
        len = snprintf(line, sizeof line, "\r%s%s%zu done", label, *label ? " " : "", done);
    } else {
        enum { WIDTH = 30 };
        size_t fill = (size_t)((double)done / (double)total * WIDTH);
        if (fill > WIDTH) fill = WIDTH;
        char bar[WIDTH + 1];
        memset(bar, '#', fill);
        memset(bar + fill, '.', WIDTH - fill);
        bar[WIDTH] = 0;
        len = snprintf(line, sizeof line, "\r%s%s[%s] %3d%% %zu/%zu", label, *label ? " " : "", bar,
                       (int)((double)done * 100.0 / (double)total), done, total);
    }
    if (len > (int)sizeof line - 2) len = (int)sizeof line - 2;
    if (end) line[len++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, (size_t)len);
    (void)w;
    if (end) atomic_store(&last_draw_ms, 0);
}
