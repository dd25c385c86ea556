/* crew connections: framed messages over Unix stream sockets.
 *
 * Who touches what. A connection has one socket. Sends use only `fd` and the
 * caller's bytes: a small message is copied behind its header on the stack
 * and sent as one buffer; a large one goes out as header + caller's bytes in
 * one sendmsg (an iovec pair, so the payload is not copied). Either is looped
 * until all is written, with MSG_NOSIGNAL so a closed peer is CREW_EPIPE
 * rather than SIGPIPE. Everything else in struct crew_conn is receive state,
 * used by the one receiving thread the contract allows (poll and wait read
 * it too); a sending thread and a receiving thread therefore share no memory
 * but the immutable `fd`.
 *
 * Receiving. Bytes are read ahead into a 64 KiB buffer (`ra`, allocated at
 * the first receive), so a stream of small messages costs about one read per
 * buffer-full, not two per message. The frame decoder (conn_frame.c) takes
 * the header from there and validates magic and length before anything is
 * allocated. A payload that fits the read-ahead buffer is assembled there; a
 * larger one is read straight into its destination (the caller's buffer, or
 * the buffer recv_alloc will hand out), in reads that stop exactly at the end
 * of the frame, so the read-ahead buffer is empty meanwhile.
 *
 * Resuming. Whatever a receive has taken from the socket stays with the
 * connection when its deadline passes: a partial header in the decoder, a
 * small payload in the read-ahead buffer, and a large one in `part` (the
 * recv_alloc buffer itself, or a copy of what had been read into the
 * caller's buffer). The next receive carries on from there.
 *
 * Errors that leave the stream out of step (bad magic, a length over
 * max_message, end of stream, a socket error) are stored in `rx_error` and
 * returned by every later receive; timeouts, CREW_EOVERFLOW and failed
 * allocations that consumed nothing are not.
 *
 * Blocking. Every wait is a ppoll() on the remaining time to one monotonic
 * deadline, absorbing EINTR. Receives without a time limit simply block in
 * recv(). Sockets stay in blocking mode (their file status flags are shared
 * with forked children), so non-blocking reads use MSG_DONTWAIT per call.
 *
 * Authentication is multiprocessing.connection's challenge-response, both
 * ways, over ordinary frames capped at HANDSHAKE_MAX bytes; see
 * docs/conn.md. libsodium provides the randomness and the HMAC-SHA256.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include <sodium.h>

#include "conn_frame.h"
#include "crew/conn.h"
#include "crew/error.h"
#include "deadline.h"

/* Message sizes are 64-bit on the wire and CREW_CONN_MAX_MESSAGE_LIMIT is
 * 2^40: both need a 64-bit size_t. */
_Static_assert(sizeof(size_t) >= sizeof(uint64_t), "crew connections need a 64-bit size_t");

/* The read-ahead buffer's size; the fuzz target builds this file with a tiny
 * one so that short inputs reach the large-message paths. */
#ifndef CREW__CONN_READAHEAD
#define CREW__CONN_READAHEAD ((size_t)64 << 10)
#endif

#define DEFAULT_BACKLOG 64

/* Handshake frames; any longer one fails the handshake. */
#define HANDSHAKE_MAX 256
#define CHALLENGE "#CHALLENGE#"
#define CHALLENGE_LEN (sizeof CHALLENGE - 1)
#define WELCOME "#WELCOME#"
#define FAILURE "#FAILURE#"
#define REPLY_LEN (sizeof WELCOME - 1)
#define NONCE_LEN 32
#define DIGEST_LEN crypto_auth_hmacsha256_BYTES

_Static_assert(sizeof WELCOME == sizeof FAILURE, "replies have one length");

struct crew_conn {
    int fd;
    size_t max_message;
    /* Receive state, used by one receiving thread at a time. */
    int rx_error;              /* 0, or the code every receive now returns */
    crew__frame_decoder frame; /* the header of the frame being received */
    unsigned char *ra;         /* read-ahead buffer, CREW__CONN_READAHEAD bytes, or NULL */
    size_t ra_pos, ra_end;     /* its unconsumed bytes are ra[ra_pos, ra_end) */
    unsigned char *part;       /* a large payload partly received (frame length bytes), or NULL */
    size_t part_got;           /* how much of it has arrived */
};

struct crew_listener {
    int fd;
    pid_t owner;               /* the process that bound the path; only it unlinks */
    dev_t dev;                 /* the socket file we created, so that close */
    ino_t ino;                 /* never unlinks another listener's file */
    bool have_ino;
    size_t max_message;        /* for accepted connections */
    unsigned char *key;        /* authkey copy, or NULL */
    size_t key_len;
    char path[sizeof ((struct sockaddr_un *)0)->sun_path];
};

typedef struct conn_cfg {
    size_t max_message;
    const unsigned char *key; /* NULL: no authentication */
    size_t key_len;
    int backlog;
} conn_cfg;

/* Where a receive puts the message. */
typedef struct rx_sink {
    void *buf;   /* crew_conn_recv: the caller's buffer, `cap` bytes */
    size_t cap;
    void **out;  /* crew_conn_recv_alloc: gets a malloc'd buffer */
    size_t *len; /* the message length (also on CREW_EOVERFLOW) */
} rx_sink;

/* ------------------------------------------------------------ helpers */

static int errno_code(int e) {
    return e == ENFILE ? CREW_EMFILE : -e;
}

static int parse_options(const crew_conn_options *o, conn_cfg *cfg) {
    *cfg = (conn_cfg){.max_message = CREW_CONN_MAX_MESSAGE_DEFAULT, .backlog = DEFAULT_BACKLOG};
    if (o == NULL)
        return 0;
    if (o->max_message > CREW_CONN_MAX_MESSAGE_LIMIT || o->backlog < 0)
        return CREW_EINVAL;
    /* An empty key is refused rather than taken to mean "no authentication":
     * a key file that came out empty must not switch security off. */
    if ((o->authkey == NULL) != (o->authkey_len == 0))
        return CREW_EINVAL;
    if (o->max_message != 0)
        cfg->max_message = o->max_message;
    cfg->key = o->authkey;
    cfg->key_len = o->authkey_len;
    if (o->backlog != 0)
        cfg->backlog = o->backlog;
    return 0;
}

static int make_address(struct sockaddr_un *a, socklen_t *alen, const char *path) {
    if (path == NULL || path[0] == '\0')
        return CREW_EINVAL;
    size_t n = strlen(path);
    if (n >= sizeof a->sun_path)
        return CREW_ENAMETOOLONG;
    memset(a, 0, sizeof *a);
    a->sun_family = AF_UNIX;
    memcpy(a->sun_path, path, n + 1);
    *alen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
    return 0;
}

/* Wait until one of `p` is ready or the deadline passes. Returns the number
 * ready (> 0), CREW_ETIMEDOUT, or a code from ppoll. A try deadline polls
 * once without blocking. */
static int wait_fds(struct pollfd *p, nfds_t n, const crew__deadline *d) {
    for (;;) {
        struct timespec ts = {0, 0}, *tsp = NULL;
        if (!crew__deadline_forever(d)) {
            int64_t rem = d->is_try ? 0 : d->ns - crew__now_ns();
            if (rem < 0)
                rem = 0;
            ts.tv_sec = (time_t)(rem / 1000000000);
            ts.tv_nsec = (long)(rem % 1000000000);
            tsp = &ts;
        }
        int r = ppoll(p, n, tsp, NULL);
        if (r > 0)
            return r;
        if (r == 0) {
            if (d->is_try || crew__deadline_passed(d))
                return CREW_ETIMEDOUT;
            continue;
        }
        if (errno != EINTR)
            return errno_code(errno);
    }
}

static int conn_new(crew_conn **out, int fd, size_t max_message) {
    crew_conn *c = calloc(1, sizeof *c);
    if (c == NULL)
        return CREW_ENOMEM;
    c->fd = fd;
    c->max_message = max_message;
    crew__frame_decoder_reset(&c->frame);
    *out = c;
    return 0;
}

/* ------------------------------------------------------------ receive */

/* Store a code that every later receive returns. */
static int rx_fail(crew_conn *c, int code) {
    free(c->part);
    c->part = NULL;
    c->part_got = 0;
    c->rx_error = code;
    return code;
}

/* Codes that say nothing about the stream: the receive may be retried. */
static bool rx_retryable(int code) {
    return code == CREW_ETIMEDOUT || code == CREW_ENOMEM;
}

/* Read up to n bytes (n > 0) into dst. Returns the count (> 0), 0 at the end
 * of the stream, or a negative code (CREW_ETIMEDOUT when the deadline
 * passed with nothing to read). */
static ssize_t read_some(crew_conn *c, void *dst, size_t n, const crew__deadline *d) {
    int flags = crew__deadline_forever(d) ? 0 : MSG_DONTWAIT;
    for (;;) {
        ssize_t r = recv(c->fd, dst, n, flags);
        if (r >= 0)
            return r;
        int e = errno;
        if (e == EINTR)
            continue;
        if (e == EAGAIN || e == EWOULDBLOCK) {
            /* Only with MSG_DONTWAIT, or if someone made the socket
             * non-blocking through crew_conn_fileno. */
            struct pollfd p = {.fd = c->fd, .events = POLLIN};
            int rc = wait_fds(&p, 1, d);
            if (rc < 0)
                return rc;
            continue;
        }
        /* A Unix socket whose peer closed with data of ours still unread
         * reports ECONNRESET once, then end of stream: both mean "closed". */
        if (e == ECONNRESET)
            return 0;
        return errno_code(e);
    }
}

/* Append what the socket has to the read-ahead buffer. Returns the count
 * read (> 0), 0 at the end of the stream, or a negative code. */
static int ra_fill(crew_conn *c, const crew__deadline *d) {
    if (c->ra == NULL) {
        c->ra = malloc(CREW__CONN_READAHEAD);
        if (c->ra == NULL)
            return CREW_ENOMEM;
    }
    if (c->ra_pos == c->ra_end)
        c->ra_pos = c->ra_end = 0;
    ssize_t r = read_some(c, c->ra + c->ra_end, CREW__CONN_READAHEAD - c->ra_end, d);
    if (r > 0)
        c->ra_end += (size_t)r;
    return (int)r;
}

/* Read the rest of a payload of n bytes straight into dst, *got of which
 * are there already; reads stop at the frame's end. 0 when complete,
 * CREW_EPROTO if the stream ends first, or a negative code. */
static int read_payload(crew_conn *c, unsigned char *dst, size_t n, size_t *got, const crew__deadline *d) {
    while (*got < n) {
        ssize_t r = read_some(c, dst + *got, n - *got, d);
        if (r == 0)
            return CREW_EPROTO;
        if (r < 0)
            return (int)r;
        *got += (size_t)r;
    }
    return 0;
}

static int rx_done(crew_conn *c, const rx_sink *s, size_t n) {
    crew__frame_decoder_reset(&c->frame);
    *s->len = n;
    return 0;
}

/* Receive one message into `s`, with frames capped at max. The one receive
 * path: crew_conn_recv, crew_conn_recv_alloc and the handshake all use it. */
static int recv_core(crew_conn *c, const rx_sink *s, uint64_t max, const crew__deadline *d) {
    if (c->rx_error != 0)
        return c->rx_error;

    /* The header, from the read-ahead buffer. */
    while (!crew__frame_done(&c->frame)) {
        if (c->ra_pos < c->ra_end) {
            size_t used;
            int rc = crew__frame_decode(&c->frame, c->ra + c->ra_pos, c->ra_end - c->ra_pos, max, &used);
            c->ra_pos += used;
            if (rc < 0)
                return rx_fail(c, rc);
            continue;
        }
        int r = ra_fill(c, d);
        if (r == 0)
            return rx_fail(c, crew__frame_empty(&c->frame) ? CREW_EOF : CREW_EPROTO);
        if (r < 0)
            return rx_retryable(r) ? r : rx_fail(c, r);
    }

    size_t n = (size_t)crew__frame_length(&c->frame); /* <= max, checked by the decoder */
    if (s->out == NULL && n > s->cap) {
        *s->len = n;
        return CREW_EOVERFLOW;
    }

    /* A large payload already partly received: carry on into `part`. */
    if (c->part != NULL) {
        int rc = read_payload(c, c->part, n, &c->part_got, d);
        if (rc != 0)
            return rx_retryable(rc) ? rc : rx_fail(c, rc);
        if (s->out != NULL) {
            *s->out = c->part;
        } else {
            memcpy(s->buf, c->part, n);
            free(c->part);
        }
        c->part = NULL;
        c->part_got = 0;
        return rx_done(c, s, n);
    }

    size_t avail = c->ra_end - c->ra_pos;

    /* A payload that fits the read-ahead buffer is assembled there. */
    if (n <= CREW__CONN_READAHEAD) {
        if (avail < n && c->ra_pos + n > CREW__CONN_READAHEAD) {
            memmove(c->ra, c->ra + c->ra_pos, avail);
            c->ra_pos = 0;
            c->ra_end = avail;
        }
        while (c->ra_end - c->ra_pos < n) {
            int r = ra_fill(c, d);
            if (r == 0)
                return rx_fail(c, CREW_EPROTO);
            if (r < 0)
                return rx_retryable(r) ? r : rx_fail(c, r);
        }
        void *dst = s->buf;
        if (s->out != NULL) {
            dst = malloc(n != 0 ? n : 1);
            if (dst == NULL)
                return CREW_ENOMEM; /* the message stays queued */
            *s->out = dst;
        }
        if (n != 0)
            memcpy(dst, c->ra + c->ra_pos, n);
        c->ra_pos += n;
        return rx_done(c, s, n);
    }

    /* A large payload goes straight to its destination. The read-ahead
     * buffer holds less than one buffer-full, so all of it is this frame's. */
    unsigned char *dst = s->buf;
    if (s->out != NULL) {
        dst = malloc(n);
        if (dst == NULL)
            return CREW_ENOMEM; /* the message stays queued */
    }
    size_t got = avail;
    if (avail != 0)
        memcpy(dst, c->ra + c->ra_pos, avail);
    c->ra_pos = c->ra_end = 0;
    int rc = read_payload(c, dst, n, &got, d);
    if (rc == 0) {
        if (s->out != NULL)
            *s->out = dst;
        return rx_done(c, s, n);
    }
    if (!rx_retryable(rc)) {
        if (s->out != NULL)
            free(dst);
        return rx_fail(c, rc);
    }
    /* Out of time: keep what arrived for the next receive. */
    if (s->out != NULL) {
        c->part = dst;
    } else if (got != 0) {
        c->part = malloc(n);
        if (c->part == NULL)
            return rx_fail(c, CREW_ENOMEM); /* the bytes read are lost */
        memcpy(c->part, dst, got);
    }
    c->part_got = got;
    return rc;
}

/* Whether a receive would complete from what is buffered, or fail at once. */
static bool rx_ready(const crew_conn *c) {
    if (c->rx_error != 0)
        return true;
    if (c->part != NULL || c->ra == NULL)
        return false; /* the missing bytes can only come from the socket */
    crew__frame_decoder f = c->frame;
    size_t used;
    int rc = crew__frame_decode(&f, c->ra + c->ra_pos, c->ra_end - c->ra_pos, c->max_message, &used);
    if (rc < 0)
        return true;
    if (rc == CREW__FRAME_NEED_MORE)
        return false;
    return c->ra_end - c->ra_pos - used >= crew__frame_length(&f);
}

int crew_conn_recv(crew_conn *conn, void *buf, size_t cap, size_t *len, double timeout) {
    if (conn == NULL || len == NULL || (buf == NULL && cap != 0))
        return CREW_EINVAL;
    crew__deadline d;
    int rc = crew__deadline_init(&d, timeout);
    if (rc != 0)
        return rc;
    rx_sink s = {.buf = buf, .cap = cap, .len = len};
    return recv_core(conn, &s, conn->max_message, &d);
}

int crew_conn_recv_alloc(crew_conn *conn, void **buf, size_t *len, double timeout) {
    if (conn == NULL || buf == NULL || len == NULL)
        return CREW_EINVAL;
    crew__deadline d;
    int rc = crew__deadline_init(&d, timeout);
    if (rc != 0)
        return rc;
    rx_sink s = {.out = buf, .len = len};
    return recv_core(conn, &s, conn->max_message, &d);
}

int crew_conn_poll(crew_conn *conn, double timeout) {
    if (conn == NULL)
        return CREW_EINVAL;
    crew__deadline d;
    int rc = crew__deadline_init(&d, timeout);
    if (rc != 0)
        return rc;
    if (rx_ready(conn))
        return 0;
    struct pollfd p = {.fd = conn->fd, .events = POLLIN};
    rc = wait_fds(&p, 1, &d);
    return rc < 0 ? rc : 0;
}

int crew_conn_wait(crew_conn *const *conns, size_t n, bool *ready, double timeout) {
    if (conns == NULL || ready == NULL || n == 0)
        return CREW_EINVAL;
    for (size_t i = 0; i < n; i++)
        if (conns[i] == NULL)
            return CREW_EINVAL;
    crew__deadline d;
    int rc = crew__deadline_init(&d, timeout);
    if (rc != 0)
        return rc;

    struct pollfd small[16];
    struct pollfd *p = small;
    if (n > sizeof small / sizeof small[0]) {
        p = calloc(n, sizeof *p);
        if (p == NULL)
            return CREW_ENOMEM;
    }
    size_t buffered = 0;
    for (size_t i = 0; i < n; i++) {
        ready[i] = rx_ready(conns[i]);
        buffered += ready[i];
        p[i] = (struct pollfd){.fd = conns[i]->fd, .events = POLLIN};
    }
    /* With a message already buffered somewhere, only look (without
     * waiting) which sockets are readable too. */
    crew__deadline now = {.ns = 0, .is_try = true};
    rc = wait_fds(p, (nfds_t)n, buffered != 0 ? &now : &d);
    int count = 0;
    for (size_t i = 0; i < n; i++) {
        if (rc > 0 && p[i].revents != 0)
            ready[i] = true;
        count += ready[i];
    }
    if (p != small)
        free(p);
    if (count > 0)
        return count;
    return rc < 0 ? rc : CREW_ETIMEDOUT;
}

/* --------------------------------------------------------------- send */

/* Write all of iov[0..n), blocking. A single buffer goes through send(),
 * which costs the kernel less than sendmsg's iovec array. */
static int send_all(int fd, struct iovec *iov, size_t n) {
    struct msghdr m = {.msg_iov = iov, .msg_iovlen = n};
    while (m.msg_iovlen > 0) {
        ssize_t w = m.msg_iovlen == 1 ? send(fd, iov->iov_base, iov->iov_len, MSG_NOSIGNAL)
                                      : sendmsg(fd, &m, MSG_NOSIGNAL);
        if (w < 0) {
            int e = errno;
            if (e == EINTR)
                continue;
            if (e == EAGAIN || e == EWOULDBLOCK) {
                /* The socket was made non-blocking behind our back: wait. */
                struct pollfd p = {.fd = fd, .events = POLLOUT};
                crew__deadline forever = {.ns = INT64_MAX};
                int rc = wait_fds(&p, 1, &forever);
                if (rc < 0)
                    return rc;
                continue;
            }
            if (e == EPIPE || e == ECONNRESET)
                return CREW_EPIPE;
            return errno_code(e);
        }
        size_t adv = (size_t)w;
        while (m.msg_iovlen > 0 && adv >= iov->iov_len) {
            adv -= iov->iov_len;
            iov++;
            m.msg_iov = iov;
            m.msg_iovlen--;
        }
        if (m.msg_iovlen > 0) {
            iov->iov_base = (char *)iov->iov_base + adv;
            iov->iov_len -= adv;
        }
    }
    return 0;
}

/* Messages up to this size are copied behind their header and sent as one
 * buffer; larger ones go out as header + caller's bytes, uncopied. */
#define SMALL_SEND 1024

int crew_conn_send(crew_conn *conn, const void *buf, size_t len) {
    if (conn == NULL || (buf == NULL && len != 0))
        return CREW_EINVAL;
    if (len > CREW_CONN_MAX_MESSAGE_LIMIT)
        return CREW_EMSGSIZE;
    if (len <= SMALL_SEND) {
        unsigned char frame[CREW__FRAME_HEADER_SIZE + SMALL_SEND];
        crew__frame_encode(frame, len);
        if (len != 0)
            memcpy(frame + CREW__FRAME_HEADER_SIZE, buf, len);
        struct iovec iov = {frame, CREW__FRAME_HEADER_SIZE + len};
        return send_all(conn->fd, &iov, 1);
    }
    unsigned char header[CREW__FRAME_HEADER_SIZE];
    crew__frame_encode(header, len);
    struct iovec iov[2] = {{header, sizeof header}, {(void *)buf, len}};
    return send_all(conn->fd, iov, 2);
}

/* ------------------------------------------------------ authentication */

static pthread_once_t sodium_once = PTHREAD_ONCE_INIT;
static int sodium_status; /* written once under sodium_once */

static void sodium_setup(void) {
    sodium_status = sodium_init() < 0 ? CREW_EAGAIN : 0;
}

static void hmac(const unsigned char *key, size_t key_len, const unsigned char *msg, size_t n,
                 unsigned char out[DIGEST_LEN]) {
    crypto_auth_hmacsha256_state st;
    crypto_auth_hmacsha256_init(&st, key, key_len);
    crypto_auth_hmacsha256_update(&st, msg, n);
    crypto_auth_hmacsha256_final(&st, out);
    sodium_memzero(&st, sizeof st);
}

/* A peer that hangs up or says anything unexpected has failed. */
static int hs_send(crew_conn *c, const void *buf, size_t len) {
    int rc = crew_conn_send(c, buf, len);
    return rc == CREW_EPIPE ? CREW_EACCES : rc;
}

static int hs_recv(crew_conn *c, unsigned char buf[HANDSHAKE_MAX], size_t *len, const crew__deadline *d) {
    rx_sink s = {.buf = buf, .cap = HANDSHAKE_MAX, .len = len};
    int rc = recv_core(c, &s, HANDSHAKE_MAX, d);
    return rc == 0 || rx_retryable(rc) ? rc : CREW_EACCES;
}

/* Challenge the peer and check its answer (deliver_challenge). */
static int deliver_challenge(crew_conn *c, const unsigned char *key, size_t key_len, const crew__deadline *d) {
    unsigned char challenge[CHALLENGE_LEN + NONCE_LEN];
    memcpy(challenge, CHALLENGE, CHALLENGE_LEN);
    randombytes_buf(challenge + CHALLENGE_LEN, NONCE_LEN);
    int rc = hs_send(c, challenge, sizeof challenge);
    if (rc != 0)
        return rc;
    unsigned char answer[HANDSHAKE_MAX];
    size_t n;
    rc = hs_recv(c, answer, &n, d);
    if (rc != 0)
        return rc;
    unsigned char want[DIGEST_LEN];
    hmac(key, key_len, challenge + CHALLENGE_LEN, NONCE_LEN, want);
    bool ok = n == DIGEST_LEN && sodium_memcmp(answer, want, DIGEST_LEN) == 0;
    sodium_memzero(want, sizeof want);
    rc = hs_send(c, ok ? WELCOME : FAILURE, REPLY_LEN);
    return ok ? rc : CREW_EACCES;
}

/* Answer the peer's challenge and read its verdict (answer_challenge). */
static int answer_challenge(crew_conn *c, const unsigned char *key, size_t key_len, const crew__deadline *d) {
    unsigned char msg[HANDSHAKE_MAX];
    size_t n;
    int rc = hs_recv(c, msg, &n, d);
    if (rc != 0)
        return rc;
    if (n != CHALLENGE_LEN + NONCE_LEN || memcmp(msg, CHALLENGE, CHALLENGE_LEN) != 0)
        return CREW_EACCES;
    unsigned char digest[DIGEST_LEN];
    hmac(key, key_len, msg + CHALLENGE_LEN, NONCE_LEN, digest);
    rc = hs_send(c, digest, sizeof digest);
    sodium_memzero(digest, sizeof digest);
    if (rc != 0)
        return rc;
    rc = hs_recv(c, msg, &n, d);
    if (rc != 0)
        return rc;
    return n == REPLY_LEN && memcmp(msg, WELCOME, REPLY_LEN) == 0 ? 0 : CREW_EACCES;
}

/* The listener challenges first, then answers; the client the reverse. */
static int handshake(crew_conn *c, const unsigned char *key, size_t key_len, bool server,
                     const crew__deadline *d) {
    pthread_once(&sodium_once, sodium_setup);
    if (sodium_status != 0)
        return sodium_status;
    int rc = server ? deliver_challenge(c, key, key_len, d) : answer_challenge(c, key, key_len, d);
    if (rc == 0)
        rc = server ? answer_challenge(c, key, key_len, d) : deliver_challenge(c, key, key_len, d);
    return rc;
}

/* ---------------------------------------------------------- pair, close */

int crew_conn_pair(crew_conn **a, crew_conn **b, const crew_conn_options *opts) {
    if (a == NULL || b == NULL)
        return CREW_EINVAL;
    conn_cfg cfg;
    int rc = parse_options(opts, &cfg);
    if (rc != 0)
        return rc;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
        return errno_code(errno);
    crew_conn *ca = NULL, *cb = NULL;
    if ((rc = conn_new(&ca, sv[0], cfg.max_message)) != 0 || (rc = conn_new(&cb, sv[1], cfg.max_message)) != 0) {
        free(ca);
        close(sv[0]);
        close(sv[1]);
        return rc;
    }
    *a = ca;
    *b = cb;
    return 0;
}

int crew_conn_fileno(const crew_conn *conn) {
    return conn == NULL ? -1 : conn->fd;
}

void crew_conn_close(crew_conn *conn) {
    if (conn == NULL)
        return;
    close(conn->fd);
    free(conn->ra);
    free(conn->part);
    free(conn);
}

/* ---------------------------------------------------- listener, connect */

/* bind() found something at the path. Remove it if it is a socket nobody
 * listens on any more (connect is refused); CREW_EADDRINUSE if a listener
 * answers or it is another kind of file. 0 means "bind again". */
static int clear_stale(const struct sockaddr_un *a, socklen_t alen) {
    struct stat st, again;
    if (lstat(a->sun_path, &st) != 0)
        return errno == ENOENT ? 0 : CREW_EADDRINUSE;
    if (!S_ISSOCK(st.st_mode))
        return CREW_EADDRINUSE;
    int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (probe < 0)
        return errno_code(errno);
    int r;
    do
        r = connect(probe, (const struct sockaddr *)a, alen);
    while (r != 0 && errno == EINTR);
    int e = errno;
    close(probe);
    if (r == 0 || e == EAGAIN)
        return CREW_EADDRINUSE; /* a live listener (EAGAIN: its backlog is full) */
    if (e == ENOENT)
        return 0;
    if (e != ECONNREFUSED)
        return CREW_EADDRINUSE;
    /* Unlink it only if it is still the file we probed. */
    if (lstat(a->sun_path, &again) != 0)
        return errno == ENOENT ? 0 : CREW_EADDRINUSE;
    if (again.st_dev != st.st_dev || again.st_ino != st.st_ino)
        return 0;
    if (unlink(a->sun_path) != 0 && errno != ENOENT)
        return errno_code(errno);
    return 0;
}

int crew_listener_open(crew_listener **out, const char *path, const crew_conn_options *opts) {
    if (out == NULL)
        return CREW_EINVAL;
    conn_cfg cfg;
    int rc = parse_options(opts, &cfg);
    if (rc != 0)
        return rc;
    struct sockaddr_un addr;
    socklen_t alen;
    if ((rc = make_address(&addr, &alen, path)) != 0)
        return rc;

    crew_listener *l = calloc(1, sizeof *l);
    if (l == NULL)
        return CREW_ENOMEM;
    l->fd = -1;
    if (cfg.key != NULL) {
        l->key = malloc(cfg.key_len);
        if (l->key == NULL) {
            free(l);
            return CREW_ENOMEM;
        }
        memcpy(l->key, cfg.key, cfg.key_len);
        l->key_len = cfg.key_len;
    }
    l->max_message = cfg.max_message;
    memcpy(l->path, addr.sun_path, sizeof l->path);

    /* Non-blocking, so that an accept another process won first does not
     * block; accepted sockets do not inherit the flag. */
    l->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (l->fd < 0) {
        rc = errno_code(errno);
        goto fail;
    }
    for (int attempt = 0;; attempt++) {
        if (bind(l->fd, (const struct sockaddr *)&addr, alen) == 0)
            break;
        int e = errno;
        if (e != EADDRINUSE) {
            rc = errno_code(e);
            goto fail;
        }
        if (attempt == 3) {
            rc = CREW_EADDRINUSE;
            goto fail;
        }
        if ((rc = clear_stale(&addr, alen)) != 0)
            goto fail;
    }
    struct stat st;
    if (lstat(l->path, &st) == 0) {
        l->dev = st.st_dev;
        l->ino = st.st_ino;
        l->have_ino = true;
    }
    if (listen(l->fd, cfg.backlog) != 0) {
        rc = errno_code(errno);
        unlink(l->path);
        goto fail;
    }
    l->owner = getpid();
    *out = l;
    return 0;

fail:
    if (l->fd >= 0)
        close(l->fd);
    if (l->key != NULL) {
        sodium_memzero(l->key, l->key_len);
        free(l->key);
    }
    free(l);
    return rc;
}

int crew_listener_accept(crew_listener *listener, crew_conn **out, double timeout) {
    if (listener == NULL || out == NULL)
        return CREW_EINVAL;
    crew__deadline d;
    int rc = crew__deadline_init(&d, timeout);
    if (rc != 0)
        return rc;
    int fd;
    for (;;) {
        fd = accept4(listener->fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd >= 0)
            break;
        int e = errno;
        if (e == EINTR || e == ECONNABORTED)
            continue;
        if (e != EAGAIN && e != EWOULDBLOCK)
            return errno_code(e);
        struct pollfd p = {.fd = listener->fd, .events = POLLIN};
        if ((rc = wait_fds(&p, 1, &d)) < 0)
            return rc;
    }
    crew_conn *c;
    if ((rc = conn_new(&c, fd, listener->max_message)) != 0) {
        close(fd);
        return rc;
    }
    if (listener->key != NULL && (rc = handshake(c, listener->key, listener->key_len, true, &d)) != 0) {
        crew_conn_close(c);
        return rc;
    }
    *out = c;
    return 0;
}

int crew_listener_fileno(const crew_listener *listener) {
    return listener == NULL ? -1 : listener->fd;
}

void crew_listener_close(crew_listener *listener) {
    if (listener == NULL)
        return;
    /* Unlink only our own file, and only in the process that created it: a
     * forked child closing its inherited copy leaves the parent listening. */
    struct stat st;
    if (listener->owner == getpid() && listener->have_ino && lstat(listener->path, &st) == 0 &&
        st.st_dev == listener->dev && st.st_ino == listener->ino)
        unlink(listener->path);
    close(listener->fd);
    if (listener->key != NULL) {
        sodium_memzero(listener->key, listener->key_len);
        free(listener->key);
    }
    free(listener);
}

/* Connect fd to a, waiting for room in the listener's backlog up to the
 * deadline. fd is non-blocking on entry and blocking on success. */
static int connect_deadline(int fd, const struct sockaddr_un *a, socklen_t alen, const crew__deadline *d) {
    bool timed = false;
    for (;;) {
        if (connect(fd, (const struct sockaddr *)a, alen) == 0)
            break;
        int e = errno;
        if (e == EINTR)
            continue;
        if (e != EAGAIN)
            return errno_code(e);
        /* The backlog is full. A blocking connect bounded by SO_SNDTIMEO
         * sleeps until the listener accepts someone or the time is up. */
        struct timeval tv = {0, 0}; /* 0: no limit */
        if (!crew__deadline_forever(d)) {
            int64_t rem = d->is_try ? 0 : d->ns - crew__now_ns();
            if (rem <= 0)
                return CREW_ETIMEDOUT;
            int64_t us = (rem + 999) / 1000;
            tv.tv_sec = (time_t)(us / 1000000);
            tv.tv_usec = (suseconds_t)(us % 1000000);
        }
        if (setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) != 0)
            return errno_code(errno);
        timed = true;
        int fl = fcntl(fd, F_GETFL);
        if (fl < 0 || ((fl & O_NONBLOCK) && fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) != 0))
            return errno_code(errno);
    }
    if (timed) {
        struct timeval none = {0, 0};
        if (setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &none, sizeof none) != 0)
            return errno_code(errno);
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || ((fl & O_NONBLOCK) && fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) != 0))
        return errno_code(errno);
    return 0;
}

int crew_conn_connect(crew_conn **out, const char *path, const crew_conn_options *opts, double timeout) {
    if (out == NULL)
        return CREW_EINVAL;
    conn_cfg cfg;
    int rc = parse_options(opts, &cfg);
    if (rc != 0)
        return rc;
    struct sockaddr_un addr;
    socklen_t alen;
    if ((rc = make_address(&addr, &alen, path)) != 0)
        return rc;
    crew__deadline d;
    if ((rc = crew__deadline_init(&d, timeout)) != 0)
        return rc;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return errno_code(errno);
    if ((rc = connect_deadline(fd, &addr, alen, &d)) != 0) {
        close(fd);
        return rc;
    }
    crew_conn *c;
    if ((rc = conn_new(&c, fd, cfg.max_message)) != 0) {
        close(fd);
        return rc;
    }
    if (cfg.key != NULL && (rc = handshake(c, cfg.key, cfg.key_len, false, &d)) != 0) {
        crew_conn_close(c);
        return rc;
    }
    *out = c;
    return 0;
}
