"""The proxy benchmark harness behind ``python bench/run.py``."""
