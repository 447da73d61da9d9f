from outdial.cli import main
import sys

sys.exit(main())
