"""The simulated Metacontroller now lives in hooks/offline/simulate.py (the `llmsafespace` command uses
it too); the tests keep importing it from here."""
from hooks.offline.simulate import (  # noqa: F401
    CLUSTER_SCOPED, KIND_OF, LAST_APPLIED, ROOT, Controller, Harness, Key, Stats, key_of, load_controllers,
    stored_form, three_way,
)
