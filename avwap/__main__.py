import sys

from avwap.cli import main

sys.exit(main())
