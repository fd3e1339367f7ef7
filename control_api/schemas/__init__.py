"""Request and resource shapes (pydantic), validated at the edge with field-named errors."""
