/* Error codes. Every fallible crew function returns 0 (or a count) on success
 * and a negative CREW_E* code on failure. Codes equal negative errno values
 * where one fits (as in libuv); crew's own conditions use -4000 and below. */
#ifndef CREW_ERROR_H
#define CREW_ERROR_H

#include <errno.h>
#include "export.h"

/* XX(name, value, message) for every code. */
#define CREW_ERRNO_MAP(XX)                                                    \
    XX(EINVAL, -EINVAL, "invalid argument")                                   \
    XX(ENOMEM, -ENOMEM, "out of memory")                                      \
    XX(EAGAIN, -EAGAIN, "resource temporarily unavailable")                   \
    XX(ETIMEDOUT, -ETIMEDOUT, "timed out")                                    \
    XX(EBUSY, -EBUSY, "resource busy")                                        \
    XX(EPERM, -EPERM, "operation not permitted")                              \
    XX(EDEADLK, -EDEADLK, "operation would deadlock")                         \
    XX(EOVERFLOW, -EOVERFLOW, "value too large")                              \
    XX(EOWNERDEAD, -EOWNERDEAD, "previous owner died")                        \
    XX(ECANCELED, -ECANCELED, "operation canceled")                           \
    XX(ENOENT, -ENOENT, "no such file or directory")                          \
    XX(EEXIST, -EEXIST, "already exists")                                     \
    XX(ENAMETOOLONG, -ENAMETOOLONG, "name too long")                          \
    XX(ENOSYS, -ENOSYS, "function not implemented")                           \
    XX(EPIPE, -EPIPE, "broken pipe")                                          \
    XX(ECONNRESET, -ECONNRESET, "connection reset by peer")                   \
    XX(EMSGSIZE, -EMSGSIZE, "message too long")                               \
    XX(EPROTO, -EPROTO, "protocol error")                                     \
    XX(EACCES, -EACCES, "permission denied")                                  \
    XX(ESHUTDOWN, -ESHUTDOWN, "shut down")                                    \
    XX(ECHILD, -ECHILD, "no child process")                                   \
    XX(ECONNREFUSED, -ECONNREFUSED, "connection refused")                     \
    XX(EADDRINUSE, -EADDRINUSE, "address already in use")                     \
    XX(EMFILE, -EMFILE, "too many open files")                                \
    XX(ESRCH, -ESRCH, "no such process or thread")                            \
    XX(EBROKEN, -4001, "barrier broken")                                      \
    XX(EFULL, -4002, "queue full")                                            \
    XX(EEMPTY, -4003, "queue empty")                                          \
    XX(EWORKERDIED, -4004, "worker process died")                             \
    XX(EOF, -4095, "end of file")

enum crew_errno {
#define CREW__ERR_ENUM(name, value, msg) CREW_##name = (value),
    CREW_ERRNO_MAP(CREW__ERR_ENUM)
#undef CREW__ERR_ENUM
};

/* A message for a CREW_E* code or any other negative errno value, never
 * NULL; 0 gives "success", unknown codes "unknown error". Thread-safe, fork-safe, does not
 * allocate. */
CREW_API const char *crew_strerror(int code);

/* The code's name, such as "CREW_ETIMEDOUT" ("CREW_OK" for 0), or
 * "CREW_UNKNOWN". */
CREW_API const char *crew_err_name(int code);

#endif
