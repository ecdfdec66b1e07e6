import sys

from tvaccine.cli import main

sys.exit(main())
