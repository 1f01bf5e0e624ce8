import sys

from watercolor.cli import main

sys.exit(main())
