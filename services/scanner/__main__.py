"""`python -m services.scanner` starts the scanner worker."""

import sys

from services.scanner.worker import main

sys.exit(main())
