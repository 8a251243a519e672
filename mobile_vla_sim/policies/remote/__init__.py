"""Policies that run elsewhere: clients of policy servers, behind the same `Policy` interface."""
