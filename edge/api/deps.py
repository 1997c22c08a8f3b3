"""What a route needs, as FastAPI dependencies: the daemon's state and the parts it hands over (put on
``app.state`` by ``create_app``), and the role each kind of route needs (edge/api/access.py).

A router module declares its routes at module level and asks for these in its signatures, e.g.
``def status(state: State) -> dict``, ``@router.post(..., dependencies=OPERATE)``.
"""

from __future__ import annotations

import threading
from typing import Annotated

from fastapi import Depends, HTTPException, Request

from edge.api.access import requires
from edge.api.page_state import OperatorState
from edge.api.state import ApiState, ModelLifecycle
from edge.runtime.principal import Role

VIEW = [requires(Role.VIEW)]  # the live image, status, recent decisions: api.viewing
OPERATE = [requires(Role.OPERATE)]  # stores data or decodes an upload
ENGINEER = [requires(Role.ENGINEER)]  # changes the model or replays history


def api_state(request: Request) -> ApiState:
    state: ApiState = request.app.state.boxinspect
    return state


def page_state(request: Request) -> OperatorState:
    op = api_state(request).operator
    if not isinstance(op, OperatorState):
        raise HTTPException(404, "the operator page is off (operator.enabled)")
    return op


def model_control(request: Request) -> ModelLifecycle:
    control = api_state(request).model_control
    if control is None:
        raise HTTPException(404, "the model's life cycle is not available in this daemon")
    return control


def decode_slots(request: Request) -> threading.BoundedSemaphore:
    slots: threading.BoundedSemaphore = request.app.state.decode_slots
    return slots


State = Annotated[ApiState, Depends(api_state)]
Page = Annotated[OperatorState, Depends(page_state)]
Control = Annotated[ModelLifecycle, Depends(model_control)]
Decodes = Annotated[threading.BoundedSemaphore, Depends(decode_slots)]
