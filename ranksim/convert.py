"""``python -m ranksim.convert``, the documented converter command; the code is :mod:`ranksim.tools.convert`."""

import sys

from ranksim.tools.convert import main

if __name__ == "__main__":
    sys.exit(main())
