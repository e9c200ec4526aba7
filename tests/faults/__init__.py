"""Fault-injection tests of issue 12: private servers only, each bounded in time."""
