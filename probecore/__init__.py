"""probecore: synthetic probes that judge service-level agreements exactly as written.

Layout: this module re-exports the public API; the modules behind it are private
(``probecore._scheduler`` …) and may change. Public submodules are ``probecore.hookspec`` (the
plugin contract) and ``probecore.testing`` (the kit for plugin authors). A plugin imports only
from these three.
"""

from ._annotations import (
    EXCLUSION_REASONS,
    Annotation,
    decode_annotation,
    encode_annotation,
)
from ._asyncio_bridge import run_asyncio
from ._clock import SystemClock, TrioWallClock, WallClock
from ._durations import Duration, format_duration, parse_duration
from ._errors import (
    PluginError,
    ProbecoreError,
    ProfileError,
    SecretError,
    StoreError,
    UsageError,
)
from ._evaluation import (
    EvaluationContext,
    Evaluator,
    ObjectiveConfig,
    Period,
    Verdict,
    compare,
    duration_verdict,
    evaluate_profile,
    ratio_verdict,
)
from ._incidents import (
    IncidentEvent,
    IncidentTracker,
    counts_as_failure,
    decode_event,
    encode_event,
    replay,
)
from ._notify import (
    ChannelConfig,
    Delivery,
    DeliveryContext,
    DeliveryError,
    Notice,
    Notifier,
)
from ._plugins import (
    BUILTIN_PLUGINS,
    PluginHost,
    PluginInfo,
    Registry,
    make_plugin_manager,
)
from ._probe import CheckContext, ProbeConfig, ProbeKind
from ._profile import Check, Profile, load_profile
from ._record import (
    ATTRIBUTIONS,
    SCHEMA_ID,
    Attribution,
    Failure,
    Observation,
    Outcome,
    SLIRecord,
    decode_record,
    encode_record,
    format_timestamp,
    format_timestamp_ms,
    parse_timestamp,
    record_json_schema,
    timestamp_ms,
)
from ._secrets import Secret, redact
from ._timeline import DOWN, EXCLUDED, UNKNOWN, UP
from ._store import Store, StoreFactory, default_store_url, open_store
from .hookspec import hookimpl

__all__ = [
    "ChannelConfig", "Delivery", "DeliveryContext", "DeliveryError", "Notice", "Notifier",
    "DOWN", "EXCLUDED", "UNKNOWN", "UP", "EvaluationContext", "Evaluator", "ObjectiveConfig", "Period", "Verdict", "compare",
    "duration_verdict", "evaluate_profile", "format_timestamp_ms", "ratio_verdict",
    "EXCLUSION_REASONS", "Annotation", "decode_annotation", "encode_annotation",
    "ATTRIBUTIONS", "BUILTIN_PLUGINS", "SCHEMA_ID", "Attribution", "Check", "CheckContext",
    "Duration", "Failure", "IncidentEvent", "IncidentTracker", "Observation", "Outcome",
    "PluginError", "PluginHost", "PluginInfo", "ProbeConfig", "ProbeKind", "ProbecoreError",
    "Profile", "ProfileError", "Registry", "SLIRecord", "Secret", "SecretError", "Store",
    "StoreError", "StoreFactory", "SystemClock", "TrioWallClock", "UsageError", "WallClock",
    "counts_as_failure", "decode_event", "decode_record", "default_store_url", "encode_event",
    "encode_record", "format_duration", "format_timestamp", "hookimpl", "load_profile",
    "make_plugin_manager", "open_store", "parse_duration", "parse_timestamp",
    "record_json_schema", "redact", "replay", "run_asyncio", "timestamp_ms",
]
