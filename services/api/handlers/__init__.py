"""The api's HTTP handlers, one module per resource, each a small class holding what it needs.

`routes.py` builds them once from the composition root's `RouteContext` and maps paths to
their methods. Handlers validate their input first (ids, query parameters, body), answer 4xx
JSON for anything malformed, build their answer from the models of `models.py`, and never
return a token or a stack trace.
"""
