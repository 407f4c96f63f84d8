"""A Python-bound step for the fault tests: it holds its actor busy for a while per batch."""

import time

import numpy as np


def slow_double(items, delay_s=0.05):
    time.sleep(delay_s)
    return [{"y": np.asarray(item["x"]) * 2} for item in items]
