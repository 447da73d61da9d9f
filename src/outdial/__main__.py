import sys

from outdial.cli import main

sys.exit(main())
