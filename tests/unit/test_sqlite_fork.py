import _sqlite3
import ctypes
import sqlite3

from project.sqlite_fork import sqlite_memory_statistics_off


def test_sqlite_memory_statistics_are_off_and_sqlite_still_works():
    assert sqlite_memory_statistics_off()
    library = ctypes.CDLL(_sqlite3.__file__)
    library.sqlite3_memory_used.restype = ctypes.c_int64
    with sqlite3.connect(":memory:") as conn:
        conn.execute("CREATE TABLE t (v TEXT)")
        conn.executemany("INSERT INTO t VALUES (?)", [("x" * 1000,)] * 100)
        assert conn.execute("SELECT COUNT(*) FROM t").fetchone() == (100,)
    # With statistics on, 100 rows of 1 kB would show here; off, SQLite counts nothing.
    assert library.sqlite3_memory_used() == 0
