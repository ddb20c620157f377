"""The fault suite: scenarios that break the store on purpose (processes killed, broker killed, links cut,
messages duplicated, reordered and skewed, fuzzed input) and measure that no shopper is charged wrongly.

``python -m chaos`` (``make chaos``) runs the full suite and prints the table; ``tests/test_chaos*.py`` run
smaller versions of each scenario.
"""
