"""gunicorn settings for the hook server (the Helm chart and scripts/serve use this file).

Workers (hooks/server/gunicorn_worker.py): WORKERS processes, as the hooks are CPU-bound, each with
GUNICORN_THREADS threads so that a slow or stalled client occupies a thread, never a worker; a
client has 5 s from connecting to deliver its whole request. Measured on loopback
(tests/test_server.py, docs/install.md): with 60 slowloris connections held open and re-opened,
good calls were answered in at most 0.12 s (sync workers: none within Metacontroller's 10 s).
Keep-alive is off: every answer closes its connection, as sync workers did, so Metacontroller's
re-used connections cannot pin its calls onto one worker (with keep-alive, 8 connections landed
8/0 on two threaded workers: shared/notes/tooling-report.md); without keep-alive the threaded
workers answered as many calls per second as sync ones in the same loopback run.

Metrics (docs/observability.md): every worker is a process, so Prometheus values are kept in
memory-mapped files under PROMETHEUS_MULTIPROC_DIR and summed at scrape time. This file makes
sure the directory exists and is empty when the server starts (a private temporary directory
when the variable is unset), marks exited workers dead so their live gauges go away, and, when
METRICS_PORT is set, serves /metrics from the master on that port as well.

Each worker freezes the garbage collector's view of everything loaded at start-up (gc.freeze):
Flask, pydantic and the hooks are ~45,000 objects that a full collection would otherwise walk
again and again while a large request is being answered (docs/benchmark.md)."""
import gc
import glob
import os
import shutil
import tempfile
import time


def _number(name, default):
    """A bad value is refused in on_starting, one line naming it (hooks/config.py), not here with
    a traceback; until then the default stands in (ServerSettings' default: a test checks)."""
    raw = os.environ.get(name, "").strip()
    return int(raw) if raw.isdigit() else default


worker_class = "hooks.server.gunicorn_worker.HookWorker"
workers = _number("WORKERS", 2)
# Enough that 60 slow clients on one worker still leave threads for Metacontroller's calls.
threads = _number("GUNICORN_THREADS", 64)
# Seconds a worker's main loop may go without a heartbeat before the master restarts it (threads
# answer the calls: one long call does not stop the heartbeat).
timeout = _number("GUNICORN_TIMEOUT", 30)
graceful_timeout = 20
keepalive = 0
# gunicorn 27 opens a control socket under $HOME by default; the image's root filesystem is
# read-only, and the hooks need no control socket.
control_socket_disable = True
accesslog = None

# prometheus_client chooses multiprocess mode when it is first imported, in the workers (the app
# is not preloaded): the variable must be set before they start, i.e. here.
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = os.environ["_LLMSS_PRIVATE_METRICS_DIR"] = tempfile.mkdtemp(prefix="llmsafespace-metrics-")
METRICS_DIR = os.environ["PROMETHEUS_MULTIPROC_DIR"]
METRICS_PORT = os.environ.get("METRICS_PORT", "").strip()
METRICS_HOST = os.environ.get("METRICS_HOST", "").strip() or "0.0.0.0"


def on_starting(server):  # noqa: ARG001 - gunicorn's signature
    """Values left by a previous server in the same directory would be added to ours."""
    _check_settings(server)
    _check_token_source(server)
    os.makedirs(METRICS_DIR, exist_ok=True)
    for stale in glob.glob(os.path.join(METRICS_DIR, "*.db")):
        os.remove(stale)


def _check_token_source(server):
    """A token source that yields no token stops the server here, with one line naming the
    variable, before any worker starts (each worker checks again in hooks/server/auth.py)."""
    from hooks.server import auth  # importable: gunicorn has put the app directory on sys.path by now

    try:
        auth.inherited = auth.from_env(os.environ)  # the state every worker starts from (pre_fork)
    except auth.TokenConfigError as exc:
        on_exit(server)  # the private metrics directory made above
        raise RuntimeError(str(exc)) from None  # gunicorn prints "Error: <message>" and exits 1


def pre_fork(server, worker):  # noqa: ARG001
    """The master follows the token file too, so that a worker forked after it changed still
    accepts the previous token for the rest of the overlap (hooks/server/auth.py). Only workers
    announce a rotation: the log has one hook_token_rotated line per worker. The master reads
    the file only here, possibly long after it changed: the overlap then counts from the file's
    modification time, so a worker restarted later never extends it."""
    from hooks.server import auth

    source = auth.inherited
    if source is not None and source.path is not None:
        try:
            age = max(0.0, time.time() - os.stat(source.path).st_mtime)
        except OSError:
            age = 0.0
        source.refresh(source.read(), source.clock(), announce=False, changed_ago=age)


def _check_settings(server):
    """Every setting (hooks/config.py) is valid, or the server stops here with one line naming
    the variable and the rule."""
    from hooks import config

    try:
        config.check_env(os.environ)
    except config.ConfigError as exc:
        on_exit(server)
        raise RuntimeError(str(exc)) from None


def when_ready(server):
    if METRICS_PORT:
        from prometheus_flask_exporter.multiprocess import GunicornPrometheusMetrics

        GunicornPrometheusMetrics.start_http_server_when_ready(int(METRICS_PORT), METRICS_HOST)
        server.log.info("metrics of all workers on http://%s:%s/metrics", METRICS_HOST, METRICS_PORT)


def post_worker_init(worker):
    gc.freeze()
    # After the app (and its token) is loaded: tests wait for this line from every worker.
    worker.log.info("Worker %s loaded the hooks", worker.pid)


def child_exit(server, worker):  # noqa: ARG001
    from prometheus_flask_exporter.multiprocess import GunicornPrometheusMetrics

    GunicornPrometheusMetrics.mark_process_dead_on_child_exit(worker.pid)


def on_exit(server):  # noqa: ARG001
    if os.environ.get("_LLMSS_PRIVATE_METRICS_DIR") == METRICS_DIR:
        shutil.rmtree(METRICS_DIR, ignore_errors=True)
