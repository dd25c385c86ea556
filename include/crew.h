/* crew: Python's threading, queue, multiprocessing and concurrent.futures for
 * C. This umbrella header includes every module. */
#ifndef CREW_H
#define CREW_H

#include "crew/version.h"
#include "crew/error.h"
#include "crew/clock.h"
#include "crew/sync.h"
#include "crew/thread.h"
#include "crew/shm.h"
#include "crew/queue.h"
#include "crew/conn.h"
#include "crew/process.h"
#include "crew/future.h"
#include "crew/pool.h"
#include "crew/rng.h"

#endif
