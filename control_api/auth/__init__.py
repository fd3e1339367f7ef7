"""Secret API keys, scopes, and the authenticated principal a request acts as."""
