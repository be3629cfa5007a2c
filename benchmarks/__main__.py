"""`python -m benchmarks [--quick] [--output DIR]`: run every measurement and write the results."""

import sys

from benchmarks.run import main

sys.exit(main())
