"""Everything Qt."""

from __future__ import annotations

import sys


def _guard_none_refcount() -> None:
    """Keep ``None`` alive under PySide6 builds that assume it is immortal.

    PySide6 6.12 returns ``None`` from void C++ methods (``QPainter.setBrush``,
    ``QWidget.update``...) without adding a reference. That is only correct from Python 3.12 on,
    where ``None`` is immortal (PEP 683). On 3.11 each such call takes one reference away, and a
    gallery painting a few thousand cards drives the count to zero: the interpreter aborts with
    "deallocating None". Giving ``None`` a reserve it can never exhaust is what 3.12 does itself.
    """
    if sys.implementation.name != "cpython" or sys.version_info >= (3, 12):
        return
    import ctypes

    before = sys.getrefcount(None)
    refcnt = ctypes.c_ssize_t.from_address(id(None))  # ob_refcnt leads PyObject in release builds
    if abs(refcnt.value - before) > 64:
        return  # not the count we expected there (a trace-refs debug build): leave it alone
    refcnt.value += 1 << 40


_guard_none_refcount()
