"""The message contracts (JSON Schema, with valid and invalid examples), shipped inside the
installed package as data: `services.common.schemas` loads them with `importlib.resources`, so
an installed (not editable) package finds them as a source checkout does."""
