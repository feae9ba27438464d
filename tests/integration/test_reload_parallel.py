#!/usr/bin/env python3
"""test_reload.py again with stateless pipelines (LUGGER_IT_STATELESS=1):
batches of one file are processed by both workers at once while the config
and scripts are reloaded; every line still arrives exactly once, processed
by one version, and per file the versions never go back, as test_reload.py
checks for pinned pipelines (parts 1 and 2; part 3, the topology changes,
has no script and is run as it is)."""
import os
import sys

os.environ["LUGGER_IT_STATELESS"] = "1"
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lugger_it as it  # noqa: E402
import test_reload  # noqa: E402

if __name__ == "__main__":
    it.main("reload_parallel", test_reload.run)
