"""Point ids for frameworks whose ids are arbitrary strings (LangChain, LlamaIndex)."""

from __future__ import annotations

import uuid

#: Namespace of the uuid5 point ids made from ids that are not UUIDs.
NAMESPACE = uuid.UUID("6f1c1b0e-5b8a-4f55-9a2c-5e0a8d3c2b71")


def point_id(doc_id: str) -> str:
    """The Shoal point id of a framework's string id: the id itself if it is a UUID
    (canonical form), else ``uuid5(NAMESPACE, id)``."""
    try:
        return str(uuid.UUID(doc_id))
    except (ValueError, TypeError, AttributeError):
        return str(uuid.uuid5(NAMESPACE, str(doc_id)))
