import sys

from tood_lib.cli import main

sys.exit(main())
