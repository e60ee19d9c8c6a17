"""One rule for object ids that must be unique within a Mount."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence

from provider.domain import Fetched


def file_of(item: Fetched) -> str:
    return item.path if item.path is not None else item.obj.path


def by_path(item: Fetched) -> str:
    return "#" + file_of(item)


def unique_ids(fetched: Sequence[Fetched], suffix: Callable[[Fetched], str] = by_path) -> list[Fetched]:
    """Ids shared by several files (one secret read into two files) get a ``suffix`` added:
    ``#<file path>`` unless the backend documented another (Vault ``~<objectName>``, Azure
    ``:<file path>``, kept so existing version ids do not change).

    The id stays stable across Mounts because the suffix comes from the SPC.
    """
    counts = Counter(item.object_id for item in fetched)
    out: list[Fetched] = []
    for item in fetched:
        if counts[item.object_id] > 1:
            tagged = item.object_id + suffix(item)
            item = Fetched(item.obj, tagged, item.contents, item.version, item.path)
        out.append(item)
    return out
