"""``python -m sb3_twm.zoo train|enjoy|record_video ...``: the rl-zoo3 scripts with TWM registered (no hook needed)."""

import sys

from sb3_twm.zoo import main

sys.exit(main())
