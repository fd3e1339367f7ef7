"""Joins a call leg or a chat to a pipeline, driven by one frozen published agent version."""
