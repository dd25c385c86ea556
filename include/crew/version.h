/* crew's version, as macros for the preprocessor and as functions for the
 * library actually linked. */
#ifndef CREW_VERSION_H
#define CREW_VERSION_H

#include "export.h"

#define CREW_VERSION_MAJOR 0
#define CREW_VERSION_MINOR 1
#define CREW_VERSION_PATCH 0
#define CREW_VERSION_STRING "0.1.0"
#define CREW_VERSION_NUMBER (CREW_VERSION_MAJOR * 10000 + CREW_VERSION_MINOR * 100 + CREW_VERSION_PATCH)

/* The linked library's version as "MAJOR.MINOR.PATCH". Never fails; fork-safe. */
CREW_API const char *crew_version(void);
/* The linked library's version as MAJOR*10000 + MINOR*100 + PATCH. */
CREW_API int crew_version_number(void);

#endif
