"""``texttune serve``: a trained classifier over HTTP (FastAPI + uvicorn).

- ``server.py``: the command's library side: load, warm up, bind, run uvicorn, drain on SIGTERM.
- ``app.py``: the FastAPI app: routes, limits, errors as JSON, the request log.
- ``schema.py``: request and response bodies (text-embeddings-inference's ``/predict`` schema).
- ``batching.py``: the micro-batching queue in front of the one model thread.
- ``scoring.py``: what the model thread does with a batch.
- ``page.py``: the one-page UI at ``/``.

Needs the ``serve`` extra (fastapi, uvicorn); nothing here is imported until ``texttune serve`` runs.
"""
