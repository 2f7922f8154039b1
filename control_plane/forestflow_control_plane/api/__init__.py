"""The HTTP API: the FastAPI app, its error mapping, bearer-token auth and response models.
Thin: parse, call the store or enqueue a job, map errors. Handed its parts by the
composition root; imports no concrete platform."""
