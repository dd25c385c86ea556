/* pipe_info: seed 001's Process that answers through a Pipe.
 *
 * seeds/001 ("Inter-process communication", test2.py):
 *     def info(conn):
 *         conn.send("Hello from {}\nppid = {}\npid={}".format(
 *             mp.current_process().name, os.getppid(), os.getpid()))
 *         conn.close()
 *     parent_conn, child_conn = mp.Pipe()
 *     p = mp.Process(target=info, args=(child_conn,))
 *     p.daemon = True
 *     p.start()
 *     print(parent_conn.recv())
 *
 * crew_conn_pair is Pipe(): two connected ends made before the fork, one
 * used by each process. A message is bytes, so the child sends the text
 * itself (without its NUL); the parent checks it against the name, its own
 * pid and the child's.
 *
 * usage: pipe_info [--quick]   (the same small run either way)
 * Exits 1 on a missing or wrong message.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <crew.h>

static int info(void *arg) {
    crew_conn *conn = arg;
    char msg[128];
    int len = snprintf(msg, sizeof msg, "Hello from %s\nppid = %d\npid=%d",
                       crew_process_current_name(), (int)getppid(), (int)getpid());
    int rc = crew_conn_send(conn, msg, (size_t)len);
    crew_conn_close(conn);
    return rc == 0 ? 0 : 1;
}

int main(void) {
    crew_conn *parent_conn, *child_conn;
    int rc = crew_conn_pair(&parent_conn, &child_conn, NULL);
    if (rc != 0) {
        fprintf(stderr, "pipe_info: crew_conn_pair: %s\n", crew_strerror(rc));
        return 1;
    }
    crew_process *p;
    rc = crew_process_start(&p, info, child_conn, &(crew_process_options){.daemon = true});
    if (rc != 0) {
        fprintf(stderr, "pipe_info: crew_process_start: %s\n", crew_strerror(rc));
        return 1;
    }
    crew_conn_close(child_conn); /* the child has its own copy */

    char *msg = NULL;
    size_t len = 0;
    rc = crew_conn_recv_alloc(parent_conn, (void **)&msg, &len, 60.0);
    char expect[128];
    snprintf(expect, sizeof expect, "Hello from %s\nppid = %d\npid=%d", crew_process_name(p),
             (int)getpid(), crew_process_pid(p));
    int ok = rc == 0 && len == strlen(expect) && memcmp(msg, expect, len) == 0;
    if (rc == 0)
        printf("%.*s\n", (int)len, msg);
    else
        fprintf(stderr, "pipe_info: crew_conn_recv_alloc: %s\n", crew_strerror(rc));
    free(msg);
    crew_conn_close(parent_conn);
    crew_process_join(p, 10.0);
    crew_process_free(p);
    if (!ok)
        printf("WRONG\n");
    return ok ? 0 : 1;
}
