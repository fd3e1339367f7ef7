"""Queries, one module per resource. Every function takes `org_id` and filters on it: tenant isolation
lives in the query, so a handler cannot forget it."""
