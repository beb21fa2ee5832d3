"""`python -m fastdrivevla_ros.cli` (also under `accelerate launch -m`)."""

import sys

from fastdrivevla_ros.cli import main

sys.exit(main())
