"""Guard rails on model changes (issue 26): promote, roll back and reload take a ``confirm`` naming the model the
caller expects to replace (the live one, as the page's dialog showed it); a confirmation that names another model
is refused with 409, so a change made on a stale page (someone else promoted meanwhile) never goes through.
Without ``confirm`` (API clients, scripts) the action goes ahead as before; the page always sends it.
"""

from __future__ import annotations

from fastapi import HTTPException

from edge.api.state import ApiState


def live_id(state: ApiState) -> str | None:
    model = state.models.get()
    return model.classifier.model_id if model is not None else None


def expect_live(state: ApiState, confirm: object, action: str) -> str | None:
    """The live model id; 409 when ``confirm`` names a model (a string) that is not the live one."""
    live = live_id(state)
    if isinstance(confirm, str) and confirm != live:
        raise HTTPException(409, f"{action} refused: the confirmation names {confirm}, but {live} is live "
                                 "(changed since the page showed it?); look again and confirm")
    return live
