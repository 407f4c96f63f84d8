"""A python-node module that takes long to import, standing in for a model that loads slowly
(issue 8, kind 7: a stop signal during loading must be obeyed at once)."""

from __future__ import annotations

import os
import time

time.sleep(float(os.environ.get("PIPECTL_TEST_LOAD_S", "120")))


def identity(items):
    return [{"y": item["x"]} for item in items]
