"""`python -m affectjax ...`: the same as the `affectjax` command."""

import sys

from affectjax.main import main

sys.exit(main())
