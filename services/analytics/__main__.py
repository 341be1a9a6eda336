"""`python -m services.analytics` starts the analytics worker."""

import sys

from services.analytics.worker import main

sys.exit(main())
