"""`python -m services.executor` starts the executor worker."""

import sys

from services.executor.worker import main

sys.exit(main())
