"""The OpenAPI description of the API: ``document`` builds it (paths from the route table),
``components`` holds the hand-written schemas, parameters and headers."""
