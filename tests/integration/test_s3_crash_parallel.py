#!/usr/bin/env python3
"""test_s3_crash.py again with a stateless pipeline (LUGGER_IT_STATELESS=1):
batches of one file are processed by both workers at once while the file
is rotated by rename and lugger is killed with SIGKILL 3 times, and every
line must still be in exactly one object, as test_s3_crash.py checks for
pinned pipelines. (The rotation and crash tests of the core cover order;
this one covers a rename and kill -9 together on a parallel pipeline.)"""
import os
import sys

os.environ["LUGGER_IT_STATELESS"] = "1"
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lugger_it as it  # noqa: E402
import test_s3_crash  # noqa: E402

if __name__ == "__main__":
    it.main("s3_crash_parallel", test_s3_crash.main)
