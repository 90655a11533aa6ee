"""Crash and fault tests of the durable store: real ``queueit serve`` processes killed with SIGKILL."""
