"""Chaining: when an event arrives, request the task a tenant's chain rules name."""
