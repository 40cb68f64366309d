import sys

from relnas.cli import main

sys.exit(main())
