/* Symbol visibility: the library is built with -fvisibility=hidden and every
 * public function is marked CREW_API. */
#ifndef CREW_EXPORT_H
#define CREW_EXPORT_H

#if defined(CREW_BUILDING)
#define CREW_API __attribute__((visibility("default")))
#else
#define CREW_API
#endif

#endif
