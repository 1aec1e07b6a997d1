"""``python -m r1mw.workload [--summary]``: write the bundled workload as JSON lines.

(Run as a package: ``python -m r1mw.workload.generator`` would execute a module the package
has already imported, which runpy warns about.)
"""

import sys

from .generator import main

sys.exit(main())
