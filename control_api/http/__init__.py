"""The HTTP shell: app factory, routing with scopes, middleware, problem+json, envelopes, pagination."""
