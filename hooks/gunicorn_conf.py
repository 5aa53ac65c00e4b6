"""gunicorn settings for the hook server (the Helm chart and scripts/serve use this file).

Sync workers: hooks are CPU-bound, and threaded or gevent workers pinned keep-alive connections
from Metacontroller onto one worker (measured in shared/notes/tooling-report.md)."""
import os

worker_class = "sync"
workers = int(os.environ.get("WORKERS", "2"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = 20
keepalive = 5
# gunicorn 27 opens a control socket under $HOME by default; the image's root filesystem is
# read-only, and the hooks need no control socket.
control_socket_disable = True
accesslog = None
