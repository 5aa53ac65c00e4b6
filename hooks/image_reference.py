"""Container image references: the grammar of github.com/distribution/reference (what the
kubelet, containerd and Docker accept) plus Docker's normalisation of the registry.

    reference := name [ ":" tag ] [ "@" digest ]
    name      := [ registry "/" ] path-component ( "/" path-component )*

The first component is a registry only if it looks like a host: it contains "." or ":", is
"localhost", or has upper-case letters. Otherwise the registry is docker.io ("python:3.10" is
docker.io/library/python:3.10)."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

from . import constants as C

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = re.compile(rf"^{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*$")
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_REGISTRY = re.compile(rf"^(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?$")
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
# Registered digest algorithms (OCI image spec) and their hex lengths; lower-case hex only.
_DIGEST_HEX = {"sha256": 64, "sha512": 128}
_HEX = re.compile(r"^[a-f0-9]+$")
_HEX64 = re.compile(r"^[a-f0-9]{64}$")
NAME_TOTAL_LENGTH_MAX = 255


@dataclass(frozen=True)
class ImageReference:
    registry: str  # normalised: lower-case, docker.io for Docker Hub
    repository: str
    tag: Optional[str]
    digest: Optional[str]


class InvalidReference(ValueError):
    pass


def normalise_registry(registry: str) -> str:
    host = registry.lower()
    return C.DEFAULT_IMAGE_REGISTRY if host in C.LEGACY_DOCKER_REGISTRIES else host


def parse(reference: str) -> ImageReference:
    """Parse an image reference or raise InvalidReference with a readable reason."""
    if not reference or reference != reference.strip():
        raise InvalidReference(f"{reference!r} is empty or has surrounding whitespace")
    rest, digest = reference, None
    if "@" in rest:
        rest, _, digest = rest.partition("@")
        algorithm, sep, hex_part = digest.partition(":")
        if not sep or algorithm not in _DIGEST_HEX:
            raise InvalidReference(f"digest {digest!r} must be sha256:<64 hex> or sha512:<128 hex>")
        if len(hex_part) != _DIGEST_HEX[algorithm] or not _HEX.match(hex_part):
            raise InvalidReference(f"digest {digest!r} must have {_DIGEST_HEX[algorithm]} lower-case hex digits")
    # A tag follows the last ":" unless that colon belongs to a registry port ("host:5000/repo").
    tag = None
    colon = rest.rfind(":")
    if colon > rest.rfind("/"):
        rest, tag = rest[:colon], rest[colon + 1:]
        if not _TAG.match(tag):
            raise InvalidReference(f"tag {tag!r} is invalid (at most 128 of letters, digits, _ . -, not starting with . or -)")
    if not rest:
        raise InvalidReference(f"{reference!r} has no repository name")
    if len(rest) > NAME_TOTAL_LENGTH_MAX:
        raise InvalidReference(f"repository name is longer than {NAME_TOTAL_LENGTH_MAX} characters")
    first, slash, remainder = rest.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost" or first != first.lower()):
        if not _REGISTRY.match(first):
            raise InvalidReference(f"registry {first!r} is not a valid host[:port]")
        registry, path = normalise_registry(first), remainder
    else:
        registry, path = C.DEFAULT_IMAGE_REGISTRY, rest
    components = path.split("/")
    for component in components:
        if not _PATH_COMPONENT.match(component):
            raise InvalidReference(
                f"repository path component {component!r} is invalid (lower-case letters and digits, "
                "separated by '.', '_', '__' or dashes)"
            )
    if registry == C.DEFAULT_IMAGE_REGISTRY and len(components) == 1:
        if _HEX64.match(path):
            # Docker refuses these: they are indistinguishable from image IDs.
            raise InvalidReference(f"repository name {path!r} looks like an image ID")
        path = f"library/{path}"
    return ImageReference(registry, path, tag, digest)
