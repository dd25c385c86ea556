/* Internal: the frame codec of crew connections.
 *
 * A frame is a 12-byte header followed by the message bytes:
 *
 *     offset 0   4 bytes   magic "CRW1"
 *     offset 4   8 bytes   message length, unsigned little-endian
 *     offset 12  length bytes of message
 *
 * The decoder is pure: it is fed bytes as they arrive, in pieces of any
 * size, keeps the partial header itself (no allocation, no I/O), and reports
 * when the header is complete. It checks each magic byte as it arrives, so a
 * stream that is out of step fails at its first wrong byte, and it checks the
 * length against the caller's limit before anyone can act on it. Errors are
 * sticky until the decoder is reset.
 */
#ifndef CREW_SRC_CONN_FRAME_H
#define CREW_SRC_CONN_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CREW__FRAME_MAGIC "CRW1"
#define CREW__FRAME_MAGIC_SIZE 4
#define CREW__FRAME_HEADER_SIZE 12

enum {
    CREW__FRAME_NEED_MORE = 0,  /* the header is not complete yet */
    CREW__FRAME_HEADER_DONE = 1 /* crew__frame_length() is valid */
};

typedef struct crew__frame_decoder {
    unsigned char header[CREW__FRAME_HEADER_SIZE]; /* bytes received so far */
    unsigned have;                                 /* how many: 0..12 */
    int error;                                     /* 0, CREW_EPROTO or CREW_EMSGSIZE */
    uint64_t length;                               /* valid once have == 12 */
} crew__frame_decoder;

/* Start on a new frame (also clears an error). */
void crew__frame_decoder_reset(crew__frame_decoder *d);

/* Feed up to n bytes. Consumes only header bytes (*used of them, possibly 0)
 * and never the message that follows. Returns CREW__FRAME_NEED_MORE,
 * CREW__FRAME_HEADER_DONE (also on later calls, consuming nothing), or, for
 * good, CREW_EPROTO (a wrong magic byte) or CREW_EMSGSIZE (length above
 * max_message). `data` may be NULL when n is 0. */
int crew__frame_decode(crew__frame_decoder *d, const void *data, size_t n, uint64_t max_message,
                       size_t *used);

/* Whether the decoder has seen no byte of the current frame. */
static inline bool crew__frame_empty(const crew__frame_decoder *d) {
    return d->have == 0 && d->error == 0;
}

static inline bool crew__frame_done(const crew__frame_decoder *d) {
    return d->have == CREW__FRAME_HEADER_SIZE && d->error == 0;
}

/* The message length; valid only when crew__frame_done(). */
static inline uint64_t crew__frame_length(const crew__frame_decoder *d) {
    return d->length;
}

/* Write the header of a frame carrying `length` bytes. */
void crew__frame_encode(unsigned char out[CREW__FRAME_HEADER_SIZE], uint64_t length);

#endif
