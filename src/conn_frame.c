/* The frame codec of crew connections (see conn_frame.h for the format).
 *
 * Pure functions over a caller-owned decoder: no I/O, no allocation, no
 * shared state, so any thread may use its own decoder. The decoder sees every
 * header byte exactly once; it validates magic bytes one by one and the
 * length as soon as its last byte arrives, so nothing downstream ever sees a
 * length above the limit it was given.
 */
#include "conn_frame.h"

#include <string.h>

#include "crew/error.h"

void crew__frame_decoder_reset(crew__frame_decoder *d) {
    memset(d, 0, sizeof *d);
}

int crew__frame_decode(crew__frame_decoder *d, const void *data, size_t n, uint64_t max_message,
                       size_t *used) {
    const unsigned char *p = data;
    size_t i = 0;
    *used = 0;
    if (d->error != 0)
        return d->error;
    while (d->have < CREW__FRAME_HEADER_SIZE && i < n) {
        unsigned char c = p[i++];
        if (d->have < CREW__FRAME_MAGIC_SIZE && c != (unsigned char)CREW__FRAME_MAGIC[d->have]) {
            d->error = CREW_EPROTO;
            *used = i;
            return d->error;
        }
        d->header[d->have++] = c;
    }
    *used = i;
    if (d->have < CREW__FRAME_HEADER_SIZE)
        return CREW__FRAME_NEED_MORE;
    if (i > 0) { /* the header completed in this call */
        uint64_t len = 0;
        for (int k = 7; k >= 0; k--)
            len = len << 8 | d->header[CREW__FRAME_MAGIC_SIZE + k];
        d->length = len;
        if (len > max_message) {
            d->error = CREW_EMSGSIZE;
            return d->error;
        }
    }
    return CREW__FRAME_HEADER_DONE;
}

void crew__frame_encode(unsigned char out[CREW__FRAME_HEADER_SIZE], uint64_t length) {
    memcpy(out, CREW__FRAME_MAGIC, CREW__FRAME_MAGIC_SIZE);
    for (int k = 0; k < 8; k++)
        out[CREW__FRAME_MAGIC_SIZE + k] = (unsigned char)(length >> (8 * k));
}
