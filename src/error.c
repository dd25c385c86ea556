/* crew_strerror and crew_err_name: table lookups over CREW_ERRNO_MAP. */
#include "crew/error.h"

#include <string.h>

const char *crew_strerror(int code) {
    switch (code) {
    case 0:
        return "success";
#define CREW__ERR_MSG(name, value, msg) case (value): return msg;
        CREW_ERRNO_MAP(CREW__ERR_MSG)
#undef CREW__ERR_MSG
    default:
        if (code < 0 && code > -4000) {
            const char *desc = strerrordesc_np(-code); /* static, never allocates */
            if (desc) return desc;
        }
        return "unknown error";
    }
}

const char *crew_err_name(int code) {
    switch (code) {
    case 0:
        return "CREW_OK";
#define CREW__ERR_NAME(name, value, msg) case (value): return "CREW_" #name;
        CREW_ERRNO_MAP(CREW__ERR_NAME)
#undef CREW__ERR_NAME
    default:
        return "CREW_UNKNOWN";
    }
}
