#!/usr/bin/env python3
"""Runs the CloudWatch Logs stand-in (cloudwatch_logs_server.js) for the
output conformance suite (tests/outputs/conformance_cloudwatch_logs.h),
which starts its peers as Python scripts: keys AKIDCONFORMANCE/secret,
region us-east-1. Prints its "PORT <n>" line. exec keeps the parent-death
signal the suite set.
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
os.execvp("node", ["node", os.path.join(HERE, "cloudwatch_logs_server.js"),
                   "--key", "AKIDCONFORMANCE", "--secret", "secret",
                   "--region", "us-east-1"] + sys.argv[1:])
