"""Who may do what on the API: closed by default, checked before a request body is read.

Three roles, one per kind of endpoint (docs/RELIABILITY.md, "Access: endpoint x role"):

- ``Role.VIEW``: the live image, status, recent decisions, the page's read-only data. Open on the plant
  network by default (``api.viewing: open``), or behind the credential (``api.viewing: token``): one setting,
  the same on every view route.
- ``Role.OPERATE``: everything that stores data or decodes an upload: feedback, labels, manual checks,
  ``/predict``, collection mode, triggers.
- ``Role.ENGINEER``: everything that changes the model or replays history: reload, candidate, retrain, promote,
  rollback, the ``/events?since_seq=`` replay.

Health (``/healthz``, ``/readyz``), ``/metrics``, the page's static files and the API description are always
open. A route nobody classified is ``VIEW`` if it only reads (GET/HEAD) and ``ENGINEER`` otherwise, so a new
endpoint is closed until someone opens it on purpose.

A credential today is the API token (``api.token``): its holder is ``Principal("token", every role)``. Without
one configured, nobody holds ``OPERATE`` or ``ENGINEER``: a fresh install serves health, metrics and views
only, and says so in its log and on its page. Named users with their own roles plug in at ``Access.identify``
(it returns a typed ``Principal``); the endpoints ask for roles, never for the token.

``AccessGuard`` is ASGI middleware: it finds the route, the role it needs and the caller's principal from the
request head alone and answers 401/403 (``Connection: close``) before the body is read, so an anonymous client
never reaches a decoder, a multipart parser or a validator, and cannot hold a connection by trickling a body.
"""

# No `from __future__ import annotations` here: FastAPI before 0.112 resolves the string annotations of a
# callable instance used as a dependency (RoleCheck) against nothing, so `request: Request` must be a real type
# (with the floors' FastAPI 0.110 the daemon refused to start: name 'Request' is not defined).
import hmac
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from fastapi import Depends, HTTPException, Request
from starlette.routing import Match

from edge.api.users import UsersFile
from edge.runtime.principal import Principal, Role, current_principal

log = logging.getLogger(__name__)

ALWAYS_OPEN = ("/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/")
ALWAYS_OPEN_PREFIXES = ("/static/", "/swagger/")
VIEW_COOKIE = "boxinspect_view"
DRAIN_MAX = 64 * 1024  # a refused request's body is read and dropped up to this size (see _drain)
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
HOW_TO_ENABLE = (
    "set api.token (or BOXINSPECT_API__TOKEN) and send 'Authorization: Bearer <token>' to enable actions: "
    "feedback, labels, checks, collection, triggers, predict, reload, model changes, event replay"
)


def has_credentials(cfg: Any) -> bool:
    """A credential can exist: the API token, or named users (api.users_file, edge/api/users.py)."""
    return cfg.api.token is not None or cfg.api.users_file is not None


def access_summary(cfg: Any) -> dict[str, Any]:
    """For the page: whether actions can be enabled at all, how, and whether views need the credential."""
    enabled = has_credentials(cfg)
    return {"actions_enabled": enabled, "viewing": cfg.api.viewing, "how_to_enable": None if enabled else HOW_TO_ENABLE}


@dataclass(frozen=True)
class Refusal:
    status: int
    detail: str

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": "Bearer"} if self.status == 401 else {}


class Access:
    """The policy: who a request comes from (``identify``) and whether that may use a role (``refusal``)."""

    def __init__(self, token: str | None, viewing: str = "open", engineer_without_token: bool = False,
                 users: UsersFile | None = None) -> None:
        self._token = token.encode() if token else None
        self.users = users  # issue 26: named users with their own tokens and roles
        self.viewing = viewing
        anon: set[Role] = set()
        if viewing == "open":
            anon.add(Role.VIEW)
        if engineer_without_token and self._token is None and users is None:  # api.reload_without_token: an explicit opt-in
            anon.add(Role.ENGINEER)
        self.anonymous_roles = frozenset(anon)

    @property
    def configured(self) -> bool:
        """A credential exists: actions can be enabled for someone."""
        return self._token is not None or self.users is not None

    def identify(self, authorization: str | None, source: str = "", view_cookie: str | None = None) -> Principal | Refusal:
        """The principal behind an ``Authorization`` header (None: anonymous); a Refusal for a bad credential.
        The page's images cannot send a header: the token in the ``boxinspect_view`` cookie (SameSite=Strict) grants
        ``VIEW`` only, so a forged cross-site request can never act with it."""
        if not authorization:
            if view_cookie and self._token is not None and hmac.compare_digest(view_cookie.encode(), self._token):
                return Principal("token (view cookie)", frozenset({Role.VIEW}), source)
            user = self.users.find(view_cookie) if view_cookie and self.users is not None else None
            if user is not None:  # a named user's token in the cookie: viewing only, like the API token's
                return Principal(user.name, frozenset({Role.VIEW}), source)
            return Principal("anonymous", self.anonymous_roles, source)
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            return Refusal(401, "missing API token: send 'Authorization: Bearer <api.token>'")
        if self._token is not None and hmac.compare_digest(value.strip().encode(), self._token):
            return Principal("token", frozenset(Role), source)
        user = self.users.find(value.strip()) if self.users is not None else None
        if user is None:
            return Refusal(401, "invalid API token")
        return Principal(user.name, user.roles, source)

    def refusal(self, who: Principal, role: Role) -> Refusal | None:
        """None if ``who`` may use ``role``; else why not (401 = send a credential, 403 = none would help here)."""
        if who.can(role):
            return None
        if not self.configured:
            return Refusal(403, f"this needs the {role.value} role and no credential is configured: {HOW_TO_ENABLE}")
        if self.users is not None and who.name in self.users.names():  # a named user without the role: no credential of theirs helps
            return Refusal(403, f"user {who.name} does not hold the {role.value} role")
        return Refusal(401, "missing API token: send 'Authorization: Bearer <api.token>'")

    def principal(self, request: Request) -> Principal:
        """FastAPI dependency: the caller (the guard has already refused bad credentials)."""
        found = request.scope.get("boxinspect.principal")
        if isinstance(found, Principal):
            return found
        who = self.identify(request.headers.get("authorization"), _source(request.scope))
        if isinstance(who, Refusal):
            raise HTTPException(who.status, who.detail, who.headers())
        return who

    def demand(self, who: Principal, role: Role) -> None:
        """Raise the 401/403 if ``who`` may not use ``role`` (for a role that depends on the parameters)."""
        no = self.refusal(who, role)
        if no is not None:
            raise HTTPException(no.status, no.detail, no.headers())


def requires(role: Role) -> Any:
    """``dependencies=[requires(Role.X)]`` on a route: the guard checks it before the body; the dependency checks
    again (for apps served without the guard) and documents it in the OpenAPI."""
    return Depends(RoleCheck(role))


def app_access(request: Request) -> Access:
    """FastAPI dependency: the app's policy (``create_app`` puts it on ``app.state.access``)."""
    access: Access = request.app.state.access
    return access


def principal(request: Request) -> Principal:
    """FastAPI dependency: the caller of this request."""
    return app_access(request).principal(request)


class RoleCheck:
    """The dependency behind ``requires``; the guard reads ``role`` off the route."""

    def __init__(self, role: Role) -> None:
        self.role = role

    def __call__(self, request: Request) -> Principal:
        access = app_access(request)
        who = access.principal(request)
        access.demand(who, self.role)
        return who


def _view_cookie(header: str) -> str | None:
    for part in header.split(";"):
        name, _, value = part.strip().partition("=")
        if name == VIEW_COOKIE:
            return unquote(value)
    return None


def _source(scope: Mapping[str, Any]) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else ""


def route_role(route: Any, method: str) -> Role | None:
    """The role a route needs for ``method`` (None: always open); see the module docstring for the defaults."""
    path = getattr(route, "path", "")
    roles = [d.dependency.role for d in getattr(route, "dependencies", ()) if isinstance(d.dependency, RoleCheck)]
    if roles:
        order = list(Role)
        return max(roles, key=order.index)
    if path in ALWAYS_OPEN or path.startswith(ALWAYS_OPEN_PREFIXES) or getattr(route, "name", "") in ("static", "swagger"):
        return None
    return Role.VIEW if method in READ_METHODS else Role.ENGINEER


def flat_routes(routes: Iterable[Any]) -> list[Any]:
    """The app's routes, with included routers opened up (FastAPI >= 0.16x keeps an included router as one
    entry; older versions copy its routes). A router included under a prefix is refused: its routes would not
    match here (the guard would then apply the default role by method, closed for every action)."""
    out: list[Any] = []
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is None:
            out.append(route)
            continue
        context = getattr(route, "include_context", None)
        if getattr(context, "prefix", "") or getattr(context, "dependencies", None):
            raise RuntimeError("edge.api.access: include routers without a prefix or dependencies; give each route its role")
        out.extend(flat_routes(inner.routes))
    return out


def role_table(routes: Iterable[Any]) -> list[tuple[str, str, Role | None]]:
    """(method, path, role) for every route of the app: the endpoint x role matrix the docs and tests show."""
    out = []
    for route in flat_routes(routes):
        methods = sorted(getattr(route, "methods", None) or {"GET"})
        for m in methods:
            if m == "HEAD":
                continue
            out.append((m, getattr(route, "path", ""), route_role(route, m)))
    return out


class AccessGuard:
    """ASGI middleware: the route's role is checked from the request head, before anything reads the body."""

    def __init__(self, app: Any, access: Access, routes: Callable[[], Iterable[Any]]) -> None:
        self.app, self.access, self.routes = app, access, routes
        self._flat: list[Any] | None = None  # the routes, opened up once at the first request (all are added by then)

    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Any], send: Callable[[Any], Any]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        role = self._role(scope)
        auth = cookie = None
        for name, value in scope.get("headers") or ():
            if name == b"authorization":
                auth = value.decode("latin-1")
            elif name == b"cookie":
                cookie = _view_cookie(value.decode("latin-1"))
        who = self.access.identify(auth, _source(scope), cookie)
        if isinstance(who, Principal):
            no = None if role is None else self.access.refusal(who, role)
            if no is None:
                scope["boxinspect.principal"] = who
                reset = current_principal.set(who)
                try:
                    await self.app(scope, receive, send)
                finally:
                    current_principal.reset(reset)
                return
        else:
            no = who if role is not None else None
            if no is None:  # an open route: a wrong credential does not matter there
                await self.app(scope, receive, send)
                return
        await _drain(scope, receive)
        await _refuse(send, no)

    def _role(self, scope: dict[str, Any]) -> Role | None:
        if self._flat is None:
            self._flat = flat_routes(self.routes())
        method = scope.get("method", "GET")
        for route in self._flat:
            match, _ = route.matches(scope)
            if match == Match.FULL:
                return route_role(route, method)
        # no route (a 404 or 405 follows): closed all the same, by the default of the method
        return Role.VIEW if method in READ_METHODS else Role.ENGINEER


async def _drain(scope: dict[str, Any], receive: Callable[[], Any]) -> None:
    """Read (and drop) a small body before refusing, so the close is clean: a socket closed with unread data
    answers the client with a reset, and it would never see its 401. A body declared larger than DRAIN_MAX is
    not read at all (the client then may see a reset: it was about to send that much to an endpoint it may not use)."""
    length = None
    for name, value in scope.get("headers") or ():
        if name == b"content-length" and value.isdigit():
            length = int(value)
    if length is not None and (length == 0 or length > DRAIN_MAX):
        return
    seen = 0
    while seen <= DRAIN_MAX:
        message = await receive()
        if message.get("type") != "http.request":
            return
        seen += len(message.get("body", b""))
        if not message.get("more_body"):
            return


async def _refuse(send: Callable[[Any], Any], no: Refusal) -> None:
    body = json.dumps({"detail": no.detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"connection", b"close")]  # the body a refused client may still be sending is never read
    headers += [(k.lower().encode(), v.encode()) for k, v in no.headers().items()]
    await send({"type": "http.response.start", "status": no.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
