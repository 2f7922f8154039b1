"""model.yaml: its schema (pydantic, every error naming its field) and the reference table
README shows. Imports nothing else of the control plane but `names`, whose length limits
the names in model.yaml must meet."""
