"""Who is asking: the roles, the principal of the request being served, and the provenance of what it stores.

Its own module below the API (edge/api/access.py checks the roles) so what stores on a principal's behalf
(edge/learn/feedback.py) can say who without importing the HTTP layer.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class Role(str, Enum):
    VIEW = "view"
    OPERATE = "operate"
    ENGINEER = "engineer"


@dataclass(frozen=True)
class Principal:
    """Who is asking: a name, the roles it holds, and where it asked from (the client address)."""

    name: str
    roles: frozenset[Role] = field(default_factory=frozenset)
    source: str = ""

    def can(self, role: Role) -> bool:
        return role in self.roles

    @property
    def anonymous(self) -> bool:
        return self.name == "anonymous"


# The caller of the request being served (set by AccessGuard; sync endpoints run with a copy of the context).
current_principal: ContextVar[Principal | None] = ContextVar("boxinspect_principal", default=None)


def provenance() -> dict[str, Any]:
    """Who gave a label and from where, for its record (issue 24): the principal's name and client address."""
    who = current_principal.get()
    return {"principal": who.name if who else None, "from": who.source if who else None}


def actor(claimed: str | None = None) -> str:
    """Who a change is recorded under (issue 26: never null): a named user's own name; with the shared token or
    anonymously, the name the caller gave (``who`` in the request), else the principal's name."""
    who = current_principal.get()
    name = who.name if who is not None else "anonymous"
    if claimed and (name == "anonymous" or name.startswith("token")):
        return claimed
    return name
