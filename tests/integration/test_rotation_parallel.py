#!/usr/bin/env python3
"""test_rotation.py again with a stateless pipeline (LUGGER_IT_STATELESS=1):
batches of one file are processed by both workers at once, and must still
reach the output in the file's order, at least once, as test_rotation.py
checks for pinned pipelines. A script makes one line in 2,500 of each file
slow, so a file's later batches finish first on the other worker: with
the reorder stage removed (lg_reorder.c emitting each batch as it comes
back) this test fails with tens of thousands of lines out of order."""
import os
import sys

os.environ["LUGGER_IT_STATELESS"] = "1"
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lugger_it as it  # noqa: E402
import test_rotation  # noqa: E402

if __name__ == "__main__":
    it.main("rotation_parallel", test_rotation.run)
