"""The one error type users see.

Every problem a user can fix (bad config key, wrong checkpoint, missing file)
is raised as :class:`EdgekdError` naming the file, the field and the fix. The
CLI turns it into exit code 2 with no traceback.
"""

from __future__ import annotations


class EdgekdError(Exception):
    """A user-fixable problem: ``what`` went wrong, in ``file``/``field``, and the ``fix``."""

    def __init__(self, what: str, *, file: object | None = None, field: str | None = None,
                 fix: str | None = None):
        self.what = what
        self.file = None if file is None else str(file)
        self.field = field
        self.fix = fix
        super().__init__(self.format())

    def format(self) -> str:
        where = []
        if self.file:
            where.append(self.file)
        if self.field:
            where.append(f"field '{self.field}'")
        head = f"{': '.join(where)}: " if where else ""
        tail = f"\n  fix: {self.fix}" if self.fix else ""
        return f"{head}{self.what}{tail}"
