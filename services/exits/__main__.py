"""`python -m services.exits` starts the exits worker."""

import sys

from services.exits.worker import main

sys.exit(main())
