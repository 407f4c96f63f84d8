"""`ray start` with every address of the test cluster on 127.0.0.1.

Ray 2.60 turns `--node-ip-address 127.0.0.1` into the address of the machine's default route
(`resolve_ip_for_localhost` asks `node_ip_address_from_perspective`), so raylets would register,
and be reached, on a non-loopback interface. The test cluster must stay on loopback; this entry
point answers that question with 127.0.0.1 and then runs Ray's own CLI unchanged.

    python -m tests.engine.backends.ray_start_loopback start --head --port P ...
"""

from __future__ import annotations

import sys

from ray._private import services
from ray.scripts.scripts import main

services.node_ip_address_from_perspective = lambda address=None: "127.0.0.1"

if __name__ == "__main__":
    sys.exit(main())
