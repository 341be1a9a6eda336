"""`python -m services.risk` starts the risk worker."""

import sys

from services.risk.worker import main

sys.exit(main())
