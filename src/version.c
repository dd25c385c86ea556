#include "crew/version.h"

const char *crew_version(void) { return CREW_VERSION_STRING; }

int crew_version_number(void) { return CREW_VERSION_NUMBER; }
