"""gunicorn settings of the gateway (the chart, scripts/serve-gateway and `python -m gateway serve`).

Threaded workers: a call spends its life waiting (API server, the runtime's stream, a slow
client), so each of WORKERS processes has GUNICORN_THREADS threads, and one long execution holds
a thread, never a worker. The heartbeat timeout does not bound a call (threads answer calls);
an execution may stream up to an hour. Keep-alive is on: the SDK reuses its connection, which
saves a TCP (and TLS) handshake per call. Metrics: prometheus_client multiprocess files under
PROMETHEUS_MULTIPROC_DIR (a private temporary directory when unset), summed at /metrics."""
import glob
import os
import shutil
import tempfile


def _number(name, default):
    raw = os.environ.get(name, "").strip()
    return int(raw) if raw.isdigit() else default


worker_class = "gthread"
workers = _number("WORKERS", 2)
threads = _number("GUNICORN_THREADS", 64)
timeout = _number("GUNICORN_TIMEOUT", 30)
# In-flight executions get this long to finish on SIGTERM (the chart's grace period is longer).
graceful_timeout = _number("GUNICORN_GRACEFUL_TIMEOUT", 60)
keepalive = 15
control_socket_disable = True
accesslog = None

if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = os.environ["_LLMSS_GATEWAY_PRIVATE_METRICS_DIR"] = tempfile.mkdtemp(prefix="llmss-gateway-metrics-")
METRICS_DIR = os.environ["PROMETHEUS_MULTIPROC_DIR"]


def on_starting(server):  # noqa: ARG001
    """A bad setting or key stops the server here with one line naming it, before any worker."""
    from gateway import config, signing

    try:
        settings = config.Settings.from_env(os.environ)
        key = signing.load_private_key(settings.signing_key_file)
    except (config.ConfigError, signing.SigningKeyError) as exc:
        on_exit(server)
        raise RuntimeError(str(exc)) from None
    server.log.info("gateway signing key loaded; public key %s", signing.public_key_b64(key))
    os.makedirs(METRICS_DIR, exist_ok=True)
    for stale in glob.glob(os.path.join(METRICS_DIR, "*.db")):
        os.remove(stale)


def post_worker_init(worker):
    worker.log.info("Worker %s loaded the gateway", worker.pid)


def child_exit(server, worker):  # noqa: ARG001
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):  # noqa: ARG001
    if os.environ.get("_LLMSS_GATEWAY_PRIVATE_METRICS_DIR") == METRICS_DIR:
        shutil.rmtree(METRICS_DIR, ignore_errors=True)
