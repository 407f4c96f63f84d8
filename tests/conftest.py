"""Settings for every test process and the servers and Ray drivers they start."""

import os

# Ray resolves 127.0.0.1 to the default route's interface unless its single-node switch is set:
# drivers (this process, `pipectl serve` subprocesses) then reach test clusters on loopback only.
# It must be set before ray is imported; tests/engine/backends/ray_start_loopback.py does the same
# for the `ray start` of the test cluster's nodes.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
