import sys

from vppkit.cli import main

sys.exit(main())
