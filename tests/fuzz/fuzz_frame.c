/* fuzz_frame: libFuzzer target for what crew reads from a peer.
 *
 * The input's first byte seeds a small generator that picks chunk sizes and
 * calls; the rest is the byte stream a hostile peer sends. Three stages:
 *
 *   1. The pure frame decoder, fed the stream in pieces: it never reports a
 *      length above max_message, consumes only header bytes, and its errors
 *      stick.
 *   2. A real connection: the stream is written in chunks into one end of a
 *      socketpair and the other end receives with timeout 0 between chunks
 *      (recv with small and large caps, recv_alloc, poll, wait), then the
 *      writer closes and the receiver drains. Results must be consistent:
 *      lengths within max_message (and cap), EOVERFLOW above cap, stored
 *      errors repeated, and nothing but the documented codes.
 *   3. The authentication handshake, both roles, against the stream: it must
 *      never succeed (the peer cannot know the HMAC of our random challenge)
 *      and never block (timeout 0).
 *
 * conn.c is compiled into this file (#include) with a 32-byte read-ahead
 * buffer, so short inputs reach the large-message paths, and with malloc and
 * calloc counted: no allocation may exceed what max_message allows, whatever
 * length a header claims.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_MAX_MESSAGE 100 /* max_message of the fuzzed connections */
#define FUZZ_READAHEAD 32

/* The largest allocation conn.c may make now; set for each stage. */
static size_t alloc_limit = FUZZ_MAX_MESSAGE;

#define FUZZ_CHECK(cond)                                                                  \
    do {                                                                                  \
        if (!(cond)) {                                                                    \
            fprintf(stderr, "fuzz_frame: check failed at line %d: %s\n", __LINE__, #cond); \
            abort();                                                                      \
        }                                                                                 \
    } while (0)

static void *fuzz_malloc(size_t n) {
    FUZZ_CHECK(n <= alloc_limit);
    return malloc(n);
}

static void *fuzz_calloc(size_t k, size_t n) {
    FUZZ_CHECK(k <= alloc_limit && n <= alloc_limit && k * n <= alloc_limit);
    return calloc(k, n);
}

#define CREW__CONN_READAHEAD ((size_t)FUZZ_READAHEAD)
#define malloc(n) fuzz_malloc(n)
#define calloc(k, n) fuzz_calloc(k, n)
#include "../../src/conn.c"
#undef malloc
#undef calloc

/* xorshift32, seeded from the input's first byte. */
static uint32_t rng_state;

static uint32_t rng(void) {
    uint32_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return rng_state = x;
}

/* ------------------------------------------------ 1. the pure decoder */

static void fuzz_decoder(const uint8_t *p, size_t n) {
    crew__frame_decoder d;
    crew__frame_decoder_reset(&d);
    FUZZ_CHECK(crew__frame_empty(&d));
    size_t i = 0;
    while (i < n) {
        size_t chunk = 1 + rng() % 16;
        if (chunk > n - i)
            chunk = n - i;
        size_t used = 99;
        int rc = crew__frame_decode(&d, p + i, chunk, FUZZ_MAX_MESSAGE, &used);
        FUZZ_CHECK(used <= chunk);
        i += used;
        if (rc < 0) {
            FUZZ_CHECK(rc == CREW_EPROTO || rc == CREW_EMSGSIZE);
            size_t again = 99;
            FUZZ_CHECK(crew__frame_decode(&d, p, n, FUZZ_MAX_MESSAGE, &again) == rc && again == 0);
            return;
        }
        if (rc == CREW__FRAME_NEED_MORE) {
            FUZZ_CHECK(used == chunk);
            continue;
        }
        FUZZ_CHECK(rc == CREW__FRAME_HEADER_DONE && crew__frame_done(&d));
        uint64_t len = crew__frame_length(&d);
        FUZZ_CHECK(len <= FUZZ_MAX_MESSAGE);
        /* Re-encoding gives back the same header. */
        unsigned char h[CREW__FRAME_HEADER_SIZE];
        crew__frame_encode(h, len);
        FUZZ_CHECK(memcmp(h, d.header, sizeof h) == 0);
        size_t skip = len < n - i ? (size_t)len : n - i;
        i += skip;
        crew__frame_decoder_reset(&d);
    }
}

/* ------------------------------------------------ 2. a real connection */

static bool write_all(int fd, const uint8_t *p, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return false;
        p += w;
        n -= (size_t)w;
    }
    return true;
}

static bool sticky(int rc) {
    return rc == CREW_EOF || rc == CREW_EPROTO || rc == CREW_EMSGSIZE;
}

/* One receive of a kind chosen by the generator. Returns its code and
 * checks everything the contract says about it. */
static int receive_once(crew_conn *c, bool drain) {
    static unsigned char buf[FUZZ_MAX_MESSAGE];
    size_t len = (size_t)-1;
    int kind = drain ? 2 : (int)(rng() % 5);
    int rc;
    if (kind == 0 || kind == 1) {
        size_t cap = kind == 0 ? 1 + rng() % 40 : sizeof buf;
        rc = crew_conn_recv(c, buf, cap, &len, 0);
        if (rc == 0)
            FUZZ_CHECK(len <= cap);
        if (rc == CREW_EOVERFLOW)
            FUZZ_CHECK(len > cap && len <= FUZZ_MAX_MESSAGE);
    } else if (kind == 2) {
        void *p = NULL;
        rc = crew_conn_recv_alloc(c, &p, &len, 0);
        if (rc == 0) {
            FUZZ_CHECK(p != NULL && len <= FUZZ_MAX_MESSAGE);
            free(p);
        } else {
            FUZZ_CHECK(p == NULL);
        }
    } else if (kind == 3) {
        rc = crew_conn_poll(c, 0);
        FUZZ_CHECK(rc == 0 || rc == CREW_ETIMEDOUT);
        return CREW_ETIMEDOUT; /* took nothing */
    } else {
        bool ready = false;
        rc = crew_conn_wait(&c, 1, &ready, 0);
        FUZZ_CHECK((rc == 1 && ready) || (rc == CREW_ETIMEDOUT && !ready));
        return CREW_ETIMEDOUT;
    }
    FUZZ_CHECK(rc == 0 || rc == CREW_ETIMEDOUT || rc == CREW_EOVERFLOW || sticky(rc));
    if (rc == 0 || rc == CREW_EOVERFLOW)
        FUZZ_CHECK(len <= FUZZ_MAX_MESSAGE);
    if (sticky(rc)) {
        /* Stored: every later receive says the same, and it is ready. */
        size_t l2;
        FUZZ_CHECK(crew_conn_recv(c, buf, sizeof buf, &l2, 0) == rc);
        FUZZ_CHECK(crew_conn_poll(c, 0) == 0);
    }
    return rc;
}

static void fuzz_conn(const uint8_t *p, size_t n) {
    crew_conn *a, *b;
    if (crew_conn_pair(&a, &b, &(crew_conn_options){.max_message = FUZZ_MAX_MESSAGE}) != 0)
        return;
    int wfd = crew_conn_fileno(b);
    int rc = 0;
    size_t i = 0;
    while (i < n && !sticky(rc)) {
        size_t chunk = 1 + rng() % 48;
        if (chunk > n - i)
            chunk = n - i;
        FUZZ_CHECK(write_all(wfd, p + i, chunk));
        i += chunk;
        /* Receive until nothing more can be had without waiting. */
        for (int k = 0; k < 64; k++) {
            rc = receive_once(a, false);
            if (rc == CREW_ETIMEDOUT || sticky(rc))
                break;
        }
    }
    crew_conn_close(b);
    /* After the close every receive ends a message or the stream: a stream
     * of n bytes holds at most n / 12 + 1 frames. */
    for (size_t k = 0; k <= n / CREW__FRAME_HEADER_SIZE + 1 && !sticky(rc); k++) {
        rc = receive_once(a, true);
        FUZZ_CHECK(rc != CREW_ETIMEDOUT);
    }
    FUZZ_CHECK(sticky(rc));
    crew_conn_close(a);
}

/* ------------------------------------------------ 3. the handshake */

static void fuzz_handshake(const uint8_t *p, size_t n, bool server) {
    crew_conn *a, *b;
    if (crew_conn_pair(&a, &b, NULL) != 0)
        return;
    /* The whole stream is there before the handshake starts; a socketpair
     * buffer holds far more than the longest input. */
    FUZZ_CHECK(write_all(crew_conn_fileno(b), p, n));
    static const unsigned char key[] = "fuzz key";
    crew__deadline now = {.ns = 0, .is_try = true};
    int rc = handshake(a, key, sizeof key - 1, server, &now);
    FUZZ_CHECK(rc == CREW_EACCES || rc == CREW_ETIMEDOUT);
    crew_conn_close(a);
    crew_conn_close(b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0)
        return 0;
    /* Allocations allowed: a message of up to FUZZ_MAX_MESSAGE bytes in
     * stages 1 and 2 and of up to HANDSHAKE_MAX in stage 3, the read-ahead
     * buffer, a connection record. */
    size_t limit = FUZZ_READAHEAD;
    if (limit < sizeof(struct crew_conn))
        limit = sizeof(struct crew_conn);

    const uint8_t *p = data + 1;
    size_t n = size - 1;
    rng_state = 0x9e3779b9u ^ ((uint32_t)data[0] * 0x01000193u);
    if (rng_state == 0)
        rng_state = 1;
    alloc_limit = limit > FUZZ_MAX_MESSAGE ? limit : FUZZ_MAX_MESSAGE;
    fuzz_decoder(p, n);
    fuzz_conn(p, n);
    alloc_limit = limit > HANDSHAKE_MAX ? limit : HANDSHAKE_MAX;
    fuzz_handshake(p, n, data[0] & 1);
    return 0;
}
