"""Policies served by another process: clients of policy servers behind the `Policy` interface."""
