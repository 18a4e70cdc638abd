"""SQLite and forked pool children: turn off SQLite's memory statistics.

An agent's main process runs its heartbeat in a thread that writes to the
database, and billiard forks pool children from that process at any time
(a replacement for a killed child, autoscaling). With SQLite's default memory
statistics every allocation takes one process-wide mutex; a fork that lands
while the heartbeat thread holds it gives the child a copy that is locked
forever, and the child hangs in its first `sqlite3.connect`, never running the
message it was handed. py-spy of such a child: pthread_mutex_lock <-
sqlite3Malloc <- pysqlite_connection_init. A stress script (a thread writing in
a loop while the main thread forks children that open a database) hung 1 child
in 1,500 with statistics on and 0 in 4,000 with them off; the embedded chaos
and autoscaling tests hung the same way. The statistics only feed
sqlite3_memory_used(), which nothing here reads.
"""

from __future__ import annotations

import ctypes
import logging

logger = logging.getLogger(__name__)

SQLITE_CONFIG_MEMSTATUS = 9  # sqlite3.h
_done = False


def sqlite_memory_statistics_off() -> bool:
    """Call before any SQLite connection is opened in this process. Returns whether
    SQLite accepted it (sqlite3_config must run while the library is shut down)."""
    global _done
    if _done:
        return True
    import _sqlite3

    library = ctypes.CDLL(_sqlite3.__file__)  # resolves the sqlite3_* that _sqlite3 itself uses
    library.sqlite3_shutdown()
    accepted = library.sqlite3_config(SQLITE_CONFIG_MEMSTATUS, ctypes.c_int(0)) == 0
    library.sqlite3_initialize()
    if not accepted:
        logger.warning("SQLite refused to turn off memory statistics; forked pool children may hang")
    _done = accepted
    return accepted
