import sys

from cellpaint.cli import main

sys.exit(main())
