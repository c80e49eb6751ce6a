"""Every Dagster internal the pipeline relies on, imported here and nowhere else.

Dagster has no public API yet for these: per-partition data-version tags for materializations logged by
a multi-partition step, planning a single failed partition in a run planned by ranges, the tags that mark
a run's partition range, and the attribute that carries a log record's Dagster metadata. An upgrade that
moves any of them breaks this module's import, which `test_definitions.py` exercises first, rather than
a step in the middle of a paid batch."""

from dagster._core.definitions.data_version import (
    CODE_VERSION_TAG,
    DATA_VERSION_IS_USER_PROVIDED_TAG,
    DATA_VERSION_TAG,
    DEFAULT_DATA_VERSION,
    NULL_EVENT_POINTER,
    compute_logical_data_version,
    get_input_data_version_tag,
    get_input_event_pointer_tag,
)
from dagster._core.events import AssetMaterializationPlannedData, DagsterEvent
from dagster._core.log_manager import LOG_RECORD_METADATA_ATTR
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    PARTITION_NAME_TAG,
)

__all__ = [
    "ASSET_PARTITION_RANGE_END_TAG",
    "ASSET_PARTITION_RANGE_START_TAG",
    "CODE_VERSION_TAG",
    "DATA_VERSION_IS_USER_PROVIDED_TAG",
    "DATA_VERSION_TAG",
    "DEFAULT_DATA_VERSION",
    "LOG_RECORD_METADATA_ATTR",
    "NULL_EVENT_POINTER",
    "PARTITION_NAME_TAG",
    "AssetMaterializationPlannedData",
    "DagsterEvent",
    "compute_logical_data_version",
    "get_input_data_version_tag",
    "get_input_event_pointer_tag",
]
