"""Broker sources (SPEC 5.4): one module per type behind the contract in abc.py, one runner for all."""
