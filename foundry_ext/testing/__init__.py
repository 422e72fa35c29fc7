"""Helpers for tests and benchmarks: fault injection and step-time harnesses."""
