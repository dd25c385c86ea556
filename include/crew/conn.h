/* Connections: the counterparts of multiprocessing.Pipe, Connection,
 * Listener/Client and multiprocessing.connection.wait.
 *
 * A connection carries whole messages (byte strings of any length, 0
 * included) in both directions over a Unix stream socket. Each message
 * travels as one frame: a 12-byte header (magic, length) and the bytes. A
 * receiver refuses a frame longer than its max_message, and any malformed
 * header, with a code and without allocating the claimed size; after that the
 * stream is out of step and every later receive returns the same code.
 *
 * A peer that closed gives CREW_EOF on receive and CREW_EPIPE on send, never
 * SIGPIPE. Sends block until the whole message is written. Receives with a
 * timeout keep a partly received message and resume it on the next call.
 *
 * Listeners may require a shared secret (authkey): before any message, each
 * side proves it knows the key with an HMAC-SHA256 challenge-response in both
 * directions (as multiprocessing.connection does), using libsodium.
 *
 * One connection may be used by one sender thread and one receiver thread at
 * a time (poll and wait count as receiving); it copies what it sends and what
 * it receives.
 */
#ifndef CREW_CONN_H
#define CREW_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include "export.h"

typedef struct crew_conn crew_conn;
typedef struct crew_listener crew_listener;

/* Default and largest max_message. */
#define CREW_CONN_MAX_MESSAGE_DEFAULT ((size_t)256 << 20)
#define CREW_CONN_MAX_MESSAGE_LIMIT ((size_t)1 << 40)

typedef struct crew_conn_options {
    size_t max_message;        /* largest message accepted on receive, bytes;
                                  0 = CREW_CONN_MAX_MESSAGE_DEFAULT */
    const void *authkey;       /* listener/connect: shared secret (any bytes),
                                  or NULL for none; an empty key is EINVAL */
    size_t authkey_len;        /* 0 exactly when authkey is NULL */
    int backlog;               /* listener: pending connections; 0 = 64 */
} crew_conn_options;

/* A connected pair (Pipe(duplex=True)): what one sends the other receives.
 * opts may be NULL (only max_message is used). Both ends survive fork; close
 * the end a process does not use. Returns 0, CREW_EINVAL, CREW_EMFILE,
 * CREW_ENOMEM. */
CREW_API int crew_conn_pair(crew_conn **a, crew_conn **b, const crew_conn_options *opts);

/* Listen on a Unix socket path. A stale socket file left there by a dead
 * listener (connect is refused) is replaced; CREW_EADDRINUSE if a live
 * listener answers there (it sees that probe as a client that hangs up at
 * once) or another kind of file is in the way. The path is unlinked again by
 * crew_listener_close. CREW_ENAMETOOLONG for a path too long for a socket
 * address; CREW_ENOENT, CREW_EACCES from the file system. */
CREW_API int crew_listener_open(crew_listener **out, const char *path, const crew_conn_options *opts);

/* Accept one connection, waiting up to `timeout`; with an authkey, run the
 * handshake (within the same deadline). 0 and *out; CREW_ETIMEDOUT;
 * CREW_EACCES if the client failed authentication (its connection is
 * closed). Blocks. */
CREW_API int crew_listener_accept(crew_listener *listener, crew_conn **out, double timeout);

/* The listener's file descriptor (readable when a client waits), or -1. */
CREW_API int crew_listener_fileno(const crew_listener *listener);

/* Stop listening and unlink the path: only in the process that opened the
 * listener (a forked child closing its copy leaves the path alone), and only
 * if the file there is still this listener's. NULL does nothing. */
CREW_API void crew_listener_close(crew_listener *listener);

/* Connect to a listener at `path` (Client), waiting up to `timeout` for the
 * connection (room in a full backlog) and the handshake. CREW_ENOENT /
 * CREW_ECONNREFUSED when nobody listens there, CREW_EACCES when the keys
 * differ or the file is not accessible, CREW_ETIMEDOUT. A client with a key
 * facing a server without one waits for a challenge that never comes: it
 * gets CREW_EACCES once the server sends or closes, else CREW_ETIMEDOUT (so
 * give it a finite timeout). Blocks. */
CREW_API int crew_conn_connect(crew_conn **out, const char *path, const crew_conn_options *opts,
                               double timeout);

/* Send one message of `len` bytes (send_bytes). Blocks until written.
 * CREW_EPIPE if the peer closed, CREW_EMSGSIZE above
 * CREW_CONN_MAX_MESSAGE_LIMIT. */
CREW_API int crew_conn_send(crew_conn *conn, const void *buf, size_t len);

/* Receive one message into buf (recv_bytes_into), waiting up to `timeout`;
 * buf may be NULL when cap is 0.
 * Returns 0 and *len; CREW_ETIMEDOUT (nothing, or part of a message, has
 * arrived; the part is kept); CREW_EOF when the peer closed between
 * messages, CREW_EPROTO when it closed inside one or sent a malformed frame;
 * CREW_EMSGSIZE if the message exceeds max_message; CREW_EOVERFLOW if it
 * exceeds cap, in which case *len is its size and the message stays queued
 * for a call with a larger buffer. Blocks. */
CREW_API int crew_conn_recv(crew_conn *conn, void *buf, size_t cap, size_t *len, double timeout);

/* As crew_conn_recv, into a buffer it allocates (recv_bytes): *buf gets
 * malloc'd memory the caller frees (also for an empty message). CREW_ENOMEM
 * leaves the message queued. */
CREW_API int crew_conn_recv_alloc(crew_conn *conn, void **buf, size_t *len, double timeout);

/* Wait until the connection is readable (poll): a whole message is buffered
 * in it, a stored error or EOF is waiting, or bytes have arrived on its
 * socket (possibly only part of a message, as with Python's poll). Takes
 * nothing. 0 when readable, CREW_ETIMEDOUT otherwise. Blocks up to timeout. */
CREW_API int crew_conn_poll(crew_conn *conn, double timeout);

/* Wait until at least one of conns[0..n-1] is readable, in the sense of
 * crew_conn_poll (connection.wait); sets ready[i] to whether each is.
 * Returns how many are ready (>= 1), or CREW_ETIMEDOUT, CREW_EINVAL (n == 0
 * or a NULL). Blocks up to timeout. */
CREW_API int crew_conn_wait(crew_conn *const *conns, size_t n, bool *ready, double timeout);

/* The connection's file descriptor, or -1. */
CREW_API int crew_conn_fileno(const crew_conn *conn);

/* Close and free. NULL does nothing. The peer then sees CREW_EOF. */
CREW_API void crew_conn_close(crew_conn *conn);

#endif
