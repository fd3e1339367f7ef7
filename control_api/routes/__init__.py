"""HTTP routes, one module per resource; each operation declares its scope with `routing.scope()`."""
