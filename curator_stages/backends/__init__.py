"""Execution backends: how stages become work on a cluster."""
