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
# Upper bound of a pod's termination grace period (operator setting, LLMSS_MAX_TERMINATION_GRACE_SECONDS):
# the original's grace = spec.timeout kept a deleted sandbox's code running for up to an hour.
DEFAULT_MAX_TERMINATION_GRACE_SECONDS: Final = 300
DEFAULT_CPU: Final = "500m"
DEFAULT_MEMORY: Final = "512Mi"
DEFAULT_EPHEMERAL_STORAGE: Final = "1Gi"
DEFAULT_VOLUME_SIZE: Final = "5Gi"
DEFAULT_WRITABLE_PATHS: Final = ("/tmp", "/workspace")
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

# Sandbox phases.
PHASE_PENDING: Final = "Pending"
PHASE_CREATING: Final = "Creating"
PHASE_RUNNING: Final = "Running"
PHASE_TERMINATING: Final = "Terminating"
PHASE_TERMINATED: Final = "Terminated"
PHASE_FAILED: Final = "Failed"
SANDBOX_PHASES: Final = (
    PHASE_PENDING, PHASE_CREATING, PHASE_RUNNING, PHASE_TERMINATING, PHASE_TERMINATED, PHASE_FAILED,
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
CONDITION_VALIDATED: Final = "Validated"  # SandboxProfile (and Sandbox)
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

# Hook server bearer token (hooks/auth.py, SECURITY.md). Each worker re-reads the token file at
# most this often, so a rotated Secret is honoured by every worker within these seconds of the
# kubelet updating the file; the previous token is still accepted this long after a worker saw
# the change, so Metacontroller (which re-reads the Secret only when told) is never refused.
HOOK_TOKEN_FILE_ENV: Final = "LLMSS_HOOK_TOKEN_FILE"
HOOK_TOKEN_ENV: Final = "LLMSS_HOOK_TOKEN"
HOOK_TOKEN_RECHECK_SECONDS: Final = 5.0
HOOK_TOKEN_OVERLAP_SECONDS: Final = 300.0
