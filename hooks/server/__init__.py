"""The hook server's HTTP edge: the Flask app and its routes, request parsing (wire, jsonio),
bearer-token auth, metrics, logging and the gunicorn configuration and worker. The hooks
themselves (hooks/*_sync.py) are pure and know nothing of HTTP."""
