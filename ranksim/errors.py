"""The one exception type that means "the user gave us something wrong".

Entry points (``train.py``, ``evaluate.py``, ``python -m ranksim.data.prepare``) catch it, log
its message in one line and exit with status 2, without a traceback. Everything else is a bug
and keeps its traceback.
"""


class UserError(Exception):
    """Bad input from the user: a missing file, an unknown config key, a malformed row.

    The message must say what is wrong and what to do about it, in one or two lines.
    """

    exit_code = 2
