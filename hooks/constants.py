"""Every key, name and default the hooks and manifests share, defined once."""
from __future__ import annotations

from typing import Final

GROUP: Final = "llmsafespace.dev"
VERSION: Final = "v1"
API_VERSION: Final = f"{GROUP}/{VERSION}"

# Kinds of our API group.
KIND_SANDBOX: Final = "Sandbox"
KIND_PROFILE: Final = "SandboxProfile"
KIND_RUNTIME: Final = "RuntimeEnvironment"
KIND_WARMPOOL: Final = "WarmPool"
KIND_WARMPOD: Final = "WarmPod"
KIND_WARMPOOL_OFFER: Final = "WarmPoolOffer"

# Metacontroller's map keys for the kinds we see in `children` and `related` (Kind.group/version;
# core kinds are Kind.version).
def gvk_key(kind: str, api_version: str) -> str:
    return f"{kind}.{api_version}"


GVK_POD: Final = gvk_key("Pod", "v1")
GVK_NODE: Final = gvk_key("Node", "v1")
GVK_SERVICE: Final = gvk_key("Service", "v1")
GVK_SERVICE_ACCOUNT: Final = gvk_key("ServiceAccount", "v1")
GVK_PVC: Final = gvk_key("PersistentVolumeClaim", "v1")
GVK_NETWORK_POLICY: Final = gvk_key("NetworkPolicy", "networking.k8s.io/v1")
GVK_RESOURCE_QUOTA: Final = gvk_key("ResourceQuota", "v1")
GVK_LIMIT_RANGE: Final = gvk_key("LimitRange", "v1")
GVK_SANDBOX: Final = gvk_key(KIND_SANDBOX, API_VERSION)
GVK_PROFILE: Final = gvk_key(KIND_PROFILE, API_VERSION)
GVK_RUNTIME: Final = gvk_key(KIND_RUNTIME, API_VERSION)
GVK_WARMPOOL: Final = gvk_key(KIND_WARMPOOL, API_VERSION)
GVK_WARMPOD: Final = gvk_key(KIND_WARMPOD, API_VERSION)
GVK_WARMPOOL_OFFER: Final = gvk_key(KIND_WARMPOOL_OFFER, API_VERSION)
GVK_CILIUM_NETWORK_POLICY: Final = gvk_key("CiliumNetworkPolicy", "cilium.io/v2")
GVK_CLUSTER_NETWORK_POLICY: Final = gvk_key("ClusterNetworkPolicy", "policy.networking.k8s.io/v1alpha2")

# Labels the controller owns. User labels with these keys (or any key under our prefix) are
# dropped before they reach a child, so a tenant cannot steer selectors or isolation.
LABEL_APP: Final = "app"
LABEL_COMPONENT: Final = "component"
APP_NAME: Final = "llmsafespace"
COMPONENT_SANDBOX: Final = "sandbox"
COMPONENT_WARMPOD: Final = "warmpod"
COMPONENT_WARMPOOL_OFFER: Final = "warmpool-offer"
COMPONENT_API: Final = "api"
LABEL_PREFIX: Final = f"{GROUP}/"
LABEL_SANDBOX_ID: Final = f"{GROUP}/sandbox-id"  # the sandbox's (possibly shortened) name
LABEL_SANDBOX_UID: Final = f"{GROUP}/sandbox-uid"  # the identity selectors use
LABEL_WARMPOOL: Final = f"{GROUP}/warmpool"
LABEL_WARMPOD: Final = f"{GROUP}/warmpod"
# On a warm Pod from its creation: its WarmPod's UID (set by the WarmPod hook from its own parent,
# never changed). A sandbox served by the pod points its Service and NetworkPolicies at it, so
# serving a sandbox needs no relabelling first (docs/warm-pools.md, "The protocol").
LABEL_WARMPOD_UID: Final = f"{GROUP}/warmpod-uid"
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
MANAGED_BY: Final = "llmsafespace-hooks"
LABEL_CONTROLLER_UID: Final = "controller-uid"  # added by Metacontroller (generateSelector)
RESERVED_LABEL_KEYS: Final = frozenset(
    {LABEL_APP, LABEL_COMPONENT, LABEL_MANAGED_BY, LABEL_CONTROLLER_UID}
)

# Annotations.
ANNOTATION_USE_WARM_POD: Final = f"{GROUP}/use-warm-pod"
ANNOTATION_CPU_PINNING: Final = "cpu-pinning.llmsafespace.dev/enabled"
ANNOTATION_SANDBOX: Final = f"{GROUP}/sandbox"  # namespace/name of the owning sandbox, informational
ANNOTATION_PRELOAD_HASH: Final = f"{GROUP}/preload-hash"
# On a sandbox's pod: how many failed pods of the sandbox were replaced before this one was created
# (absent on the first pod). The count lives on the pod, not only in status, so a stale status can
# never lower it (docs/failure-semantics.md, section 6).
ANNOTATION_POD_RESTARTS: Final = f"{GROUP}/restarts"
# On a Sandbox: a request for a new pod (any token; a new token, a new request). Its pod carries the
# token it was made for, so a request is answered once however stale a cache is
# (docs/failure-semantics.md, section 7). Absent from pods made without a request.
ANNOTATION_REPLACE_POD: Final = f"{GROUP}/replace-pod"
# On a Sandbox: when it was last used, RFC 3339 (written by the platform's API component or a user;
# docs/suspend.md). With spec.idleTimeoutSeconds, the sandbox is suspended that long after it.
ANNOTATION_LAST_ACTIVITY: Final = f"{GROUP}/last-activity"
NODE_SELECTOR_CPU_PINNING: Final = "cpu-pinning"

# Tenant namespaces (DecoratorController over Namespaces).
LABEL_TENANT_NAMESPACE: Final = f"{GROUP}/tenant"
ANNOTATION_QUOTA_PREFIX: Final = f"{GROUP}/quota-"
ANNOTATION_LIMIT_PREFIX: Final = f"{GROUP}/limit-"
ANNOTATION_GVISOR: Final = f"{GROUP}/gvisor"

# The sandbox container's contract (original design).
SANDBOX_CONTAINER: Final = "sandbox"
SANDBOX_PORT: Final = 8080
SANDBOX_PORT_NAME: Final = "http"
DNS_PORT: Final = 53
LIVENESS_PATH: Final = "/health"
READINESS_PATH: Final = "/ready"
DATA_MOUNT_PATH: Final = "/data"

# Spec defaults of the original design; the CRDs carry the same values (a test compares them).
DEFAULT_SECURITY_LEVEL: Final = "standard"
SECURITY_LEVELS: Final = ("standard", "high", "custom")
DEFAULT_TIMEOUT_SECONDS: Final = 300
# spec.startupTimeoutSeconds: how long a pod may take from creation to Running (scheduling, image
# pull, init) before the sandbox is Failed. Generous: large runtime images take minutes to pull.
DEFAULT_STARTUP_TIMEOUT_SECONDS: Final = 600
MIN_STARTUP_TIMEOUT_SECONDS: Final = 10
MAX_STARTUP_TIMEOUT_SECONDS: Final = 86400
# A sandbox whose pod failed (evicted, node lost) gets a new pod, its volume kept, this many times;
# the next failure is final (phase Failed, the last pod kept for inspection).
MAX_POD_REPLACEMENTS: Final = 3
MAX_TIMEOUT_SECONDS: Final = 3600
# spec.operatingMode (agent-sandbox's name): Suspended removes the pod and keeps everything else.
OPERATING_MODE_RUNNING: Final = "Running"
OPERATING_MODE_SUSPENDED: Final = "Suspended"
OPERATING_MODES: Final = (OPERATING_MODE_RUNNING, OPERATING_MODE_SUSPENDED)
# spec.idleTimeoutSeconds bounds (a timeout under a minute suits tests more than agents).
MIN_IDLE_TIMEOUT_SECONDS: Final = 10
MAX_IDLE_TIMEOUT_SECONDS: Final = 31_536_000
# Upper bound of a pod's termination grace period (operator setting, LLMSS_MAX_TERMINATION_GRACE_SECONDS):
# the original's grace = spec.timeout kept a deleted sandbox's code running for up to an hour.
DEFAULT_MAX_TERMINATION_GRACE_SECONDS: Final = 300
# Seconds a desired child may stay unobserved before a sandbox reports it refused (ChildNotCreated).
DEFAULT_CHILD_CREATE_GRACE_SECONDS: Final = 30
DEFAULT_CPU: Final = "500m"
DEFAULT_MEMORY: Final = "512Mi"
DEFAULT_EPHEMERAL_STORAGE: Final = "1Gi"
DEFAULT_VOLUME_SIZE: Final = "5Gi"
DEFAULT_WRITABLE_PATHS: Final = ("/tmp", "/workspace")
# What the hooks tell every sandbox container's runtime (docs/runtime-contract.md).
ENV_GATEWAY_PUBLIC_KEYS: Final = "LLMSS_GATEWAY_PUBLIC_KEYS"
ENV_POD_UID: Final = "LLMSS_POD_UID"
ENV_RUNTIME_WRITABLE: Final = "LLMSS_RUNTIME_WRITABLE"
# The platform's own variables (builders/pod.runtime_env): not the user's env, so drift ignores them.
RUNTIME_ENV_NAMES: Final = (ENV_GATEWAY_PUBLIC_KEYS, ENV_POD_UID, ENV_RUNTIME_WRITABLE)
DEFAULT_RUN_AS_USER: Final = 1000
DEFAULT_RUN_AS_GROUP: Final = 1000
SECCOMP_RUNTIME_DEFAULT: Final = "RuntimeDefault"
SECCOMP_LOCALHOST: Final = "Localhost"
PROTOCOLS: Final = ("TCP", "UDP")
RETENTION_DELETE: Final = "Delete"
RETENTION_RETAIN: Final = "Retain"
DEFAULT_SCALE_DOWN_DELAY_SECONDS: Final = 300
DEFAULT_TARGET_UTILIZATION: Final = 80
# WarmPool ttl: each idle pod expires at a point derived from its name between (100 - spread) %
# and 100 % of the ttl, so pods created together are not replaced together; expired pods keep
# serving until a replacement is Ready, with at most surge % of the wanted idle pods (at least
# one) starting as replacements at a time.
WARM_TTL_SPREAD_PERCENT: Final = 20
WARM_TTL_SURGE_PERCENT: Final = 25

# Per-sandbox environment (spec.env / spec.envFrom of Sandboxes and WarmPools; docs/environment.md).
# Names the platform sets itself, or may set in a sandbox pod, and a user may therefore not set:
# the proxy variables (the proxy egress backend points them at its proxy; refused always, whatever
# the backend, so a spec valid today stays valid when the backend is switched on) in both spellings
# (curl reads http_proxy only in lower case, Go and Python read both), and our own prefix. The CRDs
# state the same list in CEL (tests/test_environment.py compares them).
PROXY_ENV_NAMES: Final = tuple(
    n for base in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY") for n in (base, base.lower())
)
RESERVED_ENV_PREFIXES: Final = ("LLMSS_", "LLMSAFESPACE_")
RESERVED_ENV_NAMES: Final = PROXY_ENV_NAMES
# What Kubernetes (before 1.34's relaxed rule) accepts as a variable name: C_IDENTIFIER plus - and .
ENV_NAME_PATTERN: Final = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"
ENV_NAME_MAX: Final = 128
ENV_VALUE_MAX: Final = 4096  # a larger blob belongs in a Secret (secretKeyRef), not in the spec
ENV_MAX_ITEMS: Final = 64
ENV_FROM_MAX_ITEMS: Final = 8
# A Secret key (Kubernetes: [-._a-zA-Z0-9]+, at most 253).
SECRET_KEY_PATTERN: Final = r"^[-._a-zA-Z0-9]+$"

# LLMSS_USER_NAMESPACES: hostUsers: false on pods of levels without a runtime class (auto, the
# default), on every pod (on), or on none (off). hooks/builders/pod.py:user_namespaces.
USER_NAMESPACES_AUTO: Final = "auto"
USER_NAMESPACES_ON: Final = "on"
USER_NAMESPACES_OFF: Final = "off"
USER_NAMESPACES_MODES: Final = (USER_NAMESPACES_AUTO, USER_NAMESPACES_ON, USER_NAMESPACES_OFF)

# Sandbox phases.
PHASE_PENDING: Final = "Pending"
PHASE_CREATING: Final = "Creating"
PHASE_RUNNING: Final = "Running"
PHASE_TERMINATING: Final = "Terminating"
PHASE_TERMINATED: Final = "Terminated"
PHASE_FAILED: Final = "Failed"
PHASE_SUSPENDING: Final = "Suspending"  # suspended, its pod still terminating
PHASE_SUSPENDED: Final = "Suspended"  # suspended, no pod left
SANDBOX_PHASES: Final = (
    PHASE_PENDING, PHASE_CREATING, PHASE_RUNNING, PHASE_TERMINATING, PHASE_TERMINATED, PHASE_FAILED,
    PHASE_SUSPENDING, PHASE_SUSPENDED,
)

# Address space for egress rules that only name a domain (original design: public internet,
# never the private ranges where cluster and cloud metadata services live).
PUBLIC_CIDR: Final = "0.0.0.0/0"
PRIVATE_CIDRS: Final = (
    "10.0.0.0/8", "100.64.0.0/10", "169.254.0.0/16", "172.16.0.0/12", "192.168.0.0/16",
)
# IPv6 ranges a rule never reaches, like PRIVATE_CIDRS for IPv4: unique local (pod and service
# addresses of dual-stack clusters, cloud metadata such as fd00:ec2::254) and link-local.
PRIVATE_CIDRS_V6: Final = ("fc00::/7", "fe80::/10")
# IPv6 ranges that spell IPv4 addresses (IPv4-compatible, IPv4-mapped, NAT64 well-known and
# local-use prefixes, 6to4): ::ffff:169.254.169.254 is the metadata service to a dual-stack
# socket or a NAT64 gateway, so a rule inside one is refused (write the IPv4 form) and a wider
# rule (::/0, 2000::/3) excludes them.
IPV4_EMBEDDING_CIDRS_V6: Final = ("::/96", "::ffff:0:0/96", "64:ff9b::/96", "64:ff9b:1::/48", "2002::/16")
# The API server refuses IPv4-mapped addresses in a NetworkPolicy's ipBlock, `except` included, so a
# rule holding ::ffff:0:0/96 cannot exclude it: the IPv6 public internet is global unicast, and an
# IPv6 rule wider than it (::/0, ::/1, ::/2) is narrowed to it (the proxy's egress uses it too).
IPV4_MAPPED_CIDR_V6: Final = "::ffff:0:0/96"
PUBLIC_CIDR_V6: Final = "2000::/3"

# Egress enforcement backends (LLMSS_EGRESS_BACKEND, chart value egress.backend): how a domain
# egress rule is enforced. The one list of accepted values: config, chart schema and docs follow
# it (tests/test_egress_backends.py). networkpolicy is the original, coarse enforcement (a domain
# opens the public IPv4 space on its ports); the others allow the listed names only: cilium and
# clusternetworkpolicy by name in the CNI, proxy through an allow-listing forward proxy per
# tenant namespace (docs/egress-proxy.md).
EGRESS_BACKEND_NETWORKPOLICY: Final = "networkpolicy"
EGRESS_BACKEND_CILIUM: Final = "cilium"
EGRESS_BACKEND_CLUSTERNETWORKPOLICY: Final = "clusternetworkpolicy"
EGRESS_BACKEND_PROXY: Final = "proxy"
EGRESS_BACKENDS: Final = (
    EGRESS_BACKEND_NETWORKPOLICY, EGRESS_BACKEND_CILIUM, EGRESS_BACKEND_CLUSTERNETWORKPOLICY, EGRESS_BACKEND_PROXY,
)
# network-policy-api limits (ClusterNetworkPolicy v1alpha2): names, networks and protocols per
# peer or rule, and rules per policy.
CNP_MAX_ITEMS: Final = 25
# Priority of the per-sandbox ClusterNetworkPolicies in the Admin tier (0 is the highest
# precedence, 1000 the lowest). Their subjects are disjoint (one sandbox each); an administrator's
# own Admin policies with a lower number (e.g. a metadata-service deny) are evaluated first.
CNP_PRIORITY: Final = 500

# Kubernetes name limits.
MAX_DNS_LABEL: Final = 63
MAX_DNS_SUBDOMAIN: Final = 253
MAX_LABEL_VALUE: Final = 63
MAX_QUALIFIED_NAME: Final = 63  # the name part of a label or annotation key (after an optional prefix/)
# apimachinery's TotalAnnotationSizeLimitB: the sum of every annotation's key and value length.
MAX_ANNOTATIONS_TOTAL_BYTES: Final = 256 * 1024
# Kubernetes bounds labels only through the object's size (etcd's 1.5 MiB); the hooks copy a
# parent's labels into up to eight children, so they are held to the annotations' bound too.
MAX_LABELS_TOTAL_BYTES: Final = 256 * 1024

# ---------------------------------------------------------------------------------------------
# RuntimeEnvironment and SandboxProfile validation (status-only hooks).

CONDITION_AVAILABLE: Final = "Available"  # RuntimeEnvironment
CONDITION_USER_NAMESPACES: Final = "UserNamespaces"  # RuntimeEnvironment (hooks/runtime_sync.py)
REASON_SUPPORTED_BY_NODES: Final = "SupportedByNodes"
REASON_NOT_SUPPORTED_BY_NODES: Final = "NotSupportedByNodes"
REASON_NO_SCHEDULABLE_NODES: Final = "NoSchedulableNodes"
CONDITION_VALIDATED: Final = "Validated"  # SandboxProfile (and Sandbox)
CONDITION_READY: Final = "Ready"
# Security features a RuntimeEnvironment may claim; anything else fails its validation.
RUNTIME_SECURITY_FEATURES: Final = ("apparmor", "gvisor", "non-root", "readonly-rootfs", "seccomp", "selinux")
# What a security level needs the runtime to declare in spec.securityFeatures ("gvisor": the image
# runs under the high-security runtime class, LLMSS_HIGH_SECURITY_RUNTIME_CLASS, gVisor by default).
LEVEL_SECURITY_FEATURES: Final[dict[str, tuple[str, ...]]] = {"high": ("gvisor",)}
# Package managers per well-known language; a language not listed accepts any well-formed name.
PACKAGE_MANAGERS: Final[dict[str, tuple[str, ...]]] = {
    "python": ("conda", "mamba", "pdm", "pip", "pipenv", "poetry", "uv"),
    "nodejs": ("bun", "npm", "pnpm", "yarn"),
    "javascript": ("bun", "npm", "pnpm", "yarn"),
    "typescript": ("bun", "npm", "pnpm", "yarn"),
    "go": ("go",),
    "rust": ("cargo",),
    "java": ("gradle", "maven"),
    "ruby": ("bundler", "gem"),
    "php": ("composer",),
}
# Registry of image references without one (Docker's normalisation: "python:3.10" is
# docker.io/library/python:3.10); index.docker.io is the legacy spelling of the same registry.
DEFAULT_IMAGE_REGISTRY: Final = "docker.io"
LEGACY_DOCKER_REGISTRIES: Final = ("index.docker.io", "registry-1.docker.io")

# ---------------------------------------------------------------------------------------------
# Tenant namespaces: what the decorator reports and applies.

ANNOTATION_HARDENING_STATUS: Final = f"{GROUP}/hardening-status"  # "Pending" | "Applied" | "AppliedWithErrors"
ANNOTATION_HARDENING_ERRORS: Final = f"{GROUP}/hardening-errors"  # why; removed when there are none
HARDENING_PENDING: Final = "Pending"  # some attachment is not observed yet
HARDENING_APPLIED: Final = "Applied"
HARDENING_APPLIED_WITH_ERRORS: Final = "AppliedWithErrors"
COMPONENT_TENANT_NAMESPACE: Final = "tenant-namespace"
TENANT_POLICY_NAME: Final = "llmsafespace-default-deny"
TENANT_QUOTA_NAME: Final = "llmsafespace-quota"
TENANT_LIMITS_NAME: Final = "llmsafespace-limits"
PSA_PREFIX: Final = "pod-security.kubernetes.io/"
PSA_RESTRICTED: Final = "restricted"
PSA_BASELINE: Final = "baseline"
PSA_VERSION: Final = "latest"
# Sizes used when a namespace does not annotate its own (annotation suffix -> default).
DEFAULT_TENANT_QUOTA: Final[dict[str, str]] = {
    "cpu": "8", "memory": "16Gi", "ephemeral-storage": "20Gi", "pods": "20", "storage": "100Gi", "pvcs": "10",
}
DEFAULT_TENANT_LIMITS: Final[dict[str, str]] = {
    "default-cpu": DEFAULT_CPU, "default-memory": DEFAULT_MEMORY, "default-ephemeral-storage": DEFAULT_EPHEMERAL_STORAGE,
    "default-request-cpu": "100m", "default-request-memory": "128Mi", "default-request-ephemeral-storage": "256Mi",
    "max-cpu": "4", "max-memory": "8Gi", "max-ephemeral-storage": "10Gi", "max-storage": "50Gi",
}

# Hook server bearer token (hooks/server/auth.py, SECURITY.md). Each worker re-reads the token file at
# most this often, so a rotated Secret is honoured by every worker within these seconds of the
# kubelet updating the file; the previous token is still accepted this long after a worker saw
# the change, so Metacontroller (which re-reads the Secret only when told) is never refused.
HOOK_TOKEN_FILE_ENV: Final = "LLMSS_HOOK_TOKEN_FILE"
HOOK_TOKEN_ENV: Final = "LLMSS_HOOK_TOKEN"
HOOK_TOKEN_RECHECK_SECONDS: Final = 5.0
HOOK_TOKEN_OVERLAP_SECONDS: Final = 300.0

# A hook request holding more JSON values than this is answered 413 before it is parsed
# (hooks/server/app.py; counted by jsonio.values_bound). Parsing costs up to ~100 bytes of worker
# memory per value (an empty object in a list: 72), so the byte limit alone let one 29 MiB body
# of `{}`s take a worker past the chart's 512 MiB (issue 24). A WarmPool relating to 5,000
# Sandboxes (7 MB, docs/benchmark.md) holds about 640,000, the worst-case Sandbox about 280,000;
# the costliest admitted body (1 M short strings) peaked at 210 MiB in one worker, 42 MiB idle.
MAX_REQUEST_VALUES: Final = 1_000_000
# Requests with more values are parsed and answered one at a time per worker (the others wait):
# a worker's threads would otherwise multiply that peak. A running Sandbox holds about 2,500.
LARGE_REQUEST_VALUES: Final = 100_000

# ---------------------------------------------------------------------------------------------
# Egress proxy backend (EGRESS_BACKEND_PROXY, docs/egress-proxy.md).
# The proxy backend's children of a tenant namespace (hooks/builders/egress_proxy.py): one name for
# the ConfigMap, Deployment and Service, and two NetworkPolicies named after it.
COMPONENT_EGRESS_PROXY: Final = "egress-proxy"
EGRESS_PROXY_NAME: Final = "llmsafespace-egress-proxy"
EGRESS_PROXY_PORT: Final = 3128  # squid's customary port; the Service uses the same
EGRESS_PROXY_PORT_NAME: Final = "proxy"
# A pinned squid image (Canonical's, maintained with Ubuntu's security updates); operators set
# LLMSS_EGRESS_PROXY_IMAGE to their own mirror or build.
DEFAULT_EGRESS_PROXY_IMAGE: Final = "docker.io/ubuntu/squid:6.6-24.04_beta"
# The image's `proxy` user (Debian/Ubuntu uid and gid 13): non-root, and owner of nothing but the
# emptyDirs the pod mounts.
EGRESS_PROXY_UID: Final = 13
EGRESS_PROXY_CONFIG_DIR: Final = "/etc/llmsafespace-proxy"
EGRESS_PROXY_CONFIG_FILE: Final = "squid.conf"
EGRESS_PROXY_RUN_DIR: Final = "/var/run/squid"  # pid file and core dumps: an emptyDir
EGRESS_PROXY_SPOOL_DIR: Final = "/var/spool/squid"  # never written with `cache deny all`; an emptyDir anyway
ANNOTATION_EGRESS_PROXY_CONFIG_HASH: Final = f"{GROUP}/egress-proxy-config"  # rolls the proxy when its allow-list changes
# Destinations a sandbox reaches directly, never through the proxy (NO_PROXY): itself and the
# cluster's own names (which its NetworkPolicies block anyway, except the API component).
EGRESS_PROXY_NO_PROXY: Final = ("localhost", "127.0.0.1", "::1", ".svc", ".cluster.local")
# Requests and limits of the proxy container: the tenant namespace's ResourceQuota counts them.
EGRESS_PROXY_RESOURCES: Final[dict[str, dict[str, str]]] = {
    "requests": {"cpu": "50m", "memory": "64Mi", "ephemeral-storage": "64Mi"},
    "limits": {"cpu": "500m", "memory": "256Mi", "ephemeral-storage": "256Mi"},
}

# Hook server connections (hooks/server/gunicorn_worker.py, docs/install.md): a client has this long from
# connecting to deliver its whole request, headers and body (Metacontroller sends it at once; a
# 32 MB body takes well under a second in a cluster), or it gets a JSON 408 and is closed; an
# answer the client does not take within the second bound is dropped (Metacontroller's webhook
# timeout is 10 s: it has given up by then).
HOOK_REQUEST_READ_SECONDS: Final = 5.0
HOOK_RESPONSE_SEND_SECONDS: Final = 10.0
