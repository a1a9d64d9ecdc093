"""The one exception type that the CLI turns into a single readable line (no traceback)."""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user: the message names the file or flag and the fix.

    The CLI prints ``error: <message>`` and exits with status 2. Library code raises it
    wherever the cause is something the user can correct (a path, a flag, a data file).
    """
