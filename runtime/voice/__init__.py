"""Voice calls in the runtime: a CallLeg joined to the speech pipeline and the agent's brain."""
