"""`python -m services.regime` starts the regime worker."""

import sys

from services.regime.worker import main

sys.exit(main())
