"""Serve any `Policy` over WebSocket (openpi-compatible msgpack messages) and evaluate a remote one."""
