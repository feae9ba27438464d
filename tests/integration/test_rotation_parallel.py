#!/usr/bin/env python3
"""test_rotation.py again with a stateless pipeline (LUGGER_IT_STATELESS=1):
batches of one file are processed by both workers at once, and must still
reach the output in the file's order, at least once, as test_rotation.py
checks for pinned pipelines."""
import os
import sys

os.environ["LUGGER_IT_STATELESS"] = "1"
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lugger_it as it  # noqa: E402
import test_rotation  # noqa: E402

if __name__ == "__main__":
    it.main("rotation_parallel", test_rotation.run)
