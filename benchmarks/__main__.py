"""`python -m benchmarks [--quick | --smoke] [--output DIR]`: run the measurements, write the results."""

import sys

from benchmarks.run import main

sys.exit(main())
