"""Every hook the server answers, in one table: path -> (controller, hook, function).

metacontroller/*.yaml must name exactly these paths (tests/test_manifests.py checks it)."""
from __future__ import annotations

from datetime import datetime
from typing import Any, Callable, Mapping, NamedTuple

from .. import sandbox_sync
from .. import namespace_sync, profile_sync, runtime_sync
from .. import warmpod_sync, warmpool_sync
from ..config import Config

HookFunction = Callable[[Mapping[str, Any], datetime, Config], dict[str, Any]]


class Route(NamedTuple):
    controller: str
    hook: str  # sync | finalize | customize
    function: HookFunction


ROUTES: dict[str, Route] = {
    "/sandbox/customize": Route("sandbox", "customize", sandbox_sync.customize),
    "/sandbox/sync": Route("sandbox", "sync", sandbox_sync.sync),
    "/sandbox/finalize": Route("sandbox", "finalize", sandbox_sync.finalize),
    "/runtimeenvironment/customize": Route("runtimeenvironment", "customize", runtime_sync.customize),
    "/runtimeenvironment/sync": Route("runtimeenvironment", "sync", runtime_sync.sync),
    "/sandboxprofile/customize": Route("sandboxprofile", "customize", profile_sync.customize),
    "/sandboxprofile/sync": Route("sandboxprofile", "sync", profile_sync.sync),
    "/tenantnamespace/customize": Route("tenantnamespace", "customize", namespace_sync.customize),
    "/tenantnamespace/sync": Route("tenantnamespace", "sync", namespace_sync.sync),
    "/warmpool/customize": Route("warmpool", "customize", warmpool_sync.customize),
    "/warmpool/sync": Route("warmpool", "sync", warmpool_sync.sync),
    "/warmpool/finalize": Route("warmpool", "finalize", warmpool_sync.finalize),
    "/warmpod/sync": Route("warmpod", "sync", warmpod_sync.sync),
    "/warmpod/finalize": Route("warmpod", "finalize", warmpod_sync.finalize),
}
