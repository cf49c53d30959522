"""The one exception type that means "the user gave us something wrong".

Entry points (``train.py``, ``evaluate.py``, ``python -m ranksim.data.prepare``) catch it, log
its message in one line and exit with status 2, without a traceback. Everything else is a bug
and keeps its traceback.
"""

import sys
from typing import Callable


class UserError(Exception):
    """Bad input from the user: a missing file, an unknown config key, a malformed row.

    The message must say what is wrong and what to do about it, in one or two lines.
    """

    exit_code = 2


def exit_status(body: Callable[[], "int | None"], interrupted: str) -> int:
    """Run a command-line ``body`` and return its exit status.

    A :class:`UserError` becomes ``error: <message>`` on stderr and status 2. Ctrl-C prints
    ``interrupted`` (what the user can do next) and gives 130.
    """
    try:
        return int(body() or 0)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return UserError.exit_code
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
        return 130
