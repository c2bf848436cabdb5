import sys

from semcodec.cli import main

sys.exit(main())
