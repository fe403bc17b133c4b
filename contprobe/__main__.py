import sys

from contprobe.cli import main

sys.exit(main())
