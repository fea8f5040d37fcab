import sys

from axial_deploy.cli import main

sys.exit(main())
