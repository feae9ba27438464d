#!/usr/bin/env python3
"""test_backpressure.py again with a stateless pipeline (LUGGER_IT_STATELESS=1):
batches of one file are processed by both workers at once (and wait in
the reorder stage for their turn), and memory must still stay within the
budget while the output is blocked, with every line once and in order, as
test_backpressure.py checks for pinned pipelines."""
import os
import sys

os.environ["LUGGER_IT_STATELESS"] = "1"
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lugger_it as it  # noqa: E402
import test_backpressure  # noqa: E402

if __name__ == "__main__":
    it.main("backpressure_parallel", test_backpressure.run)
