"""Policies and their updates: pure torch, no Ray, no sockets, no files."""
