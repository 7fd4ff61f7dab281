"""The CRM's pull API and the head dispatcher's KPIs, as one FastAPI router for the web shell.

``shell.include_router(crm_router(pool_or_store=..., tokens=..., sla_minutes=10))`` serves:

- ``GET /api/crm/v1/visit-exceptions``: the change feed of visit exceptions (every version, in
  commit order, with an opaque ``next`` cursor; see store/crm_queries.py for why it never skips a
  late commit);
- ``GET /api/crm/v1/service-quality`` (JSON, or CSV with ``Accept: text/csv``) and
  ``GET /api/crm/v1/service-quality.csv``: per client and per site;
- ``GET /api/crm/v1/overdue-sites``: sites with no visit within their contract period;
- ``GET /api/ops/v1/dispatcher-kpis``: per dispatcher and overall;
- ``GET /api/ops/v1/route-analytics``: for route planning, per site the arrival against the
  window and the typical service time, and the typical drive between consecutive stops by hour
  of day (the views of migration 0007; the service also seeds its ETA model with them).

Why the shape: the response models are pydantic classes, so ``/openapi.json`` is generated from
the code that serves the answers.  Auth is a dependency that runs *before* any parameter is
looked at: a request without a valid token gets 401 and nothing else, even with bad parameters.
FastAPI's 422 for a parameter it cannot parse is turned into a 400 naming the parameter
(:class:`_BadRequestRoute`), and every other check (cursor, date range ≤ 366 days, dates within
2000..2100) says the same way which parameter is wrong and why.  A database that is down or
too slow is a 503 with ``Retry-After`` (the client retries), never a 500.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import csv
import dataclasses
import datetime as dt
import functools
import io
import re
import zoneinfo
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Annotated, Any, Literal, Protocol

import psycopg
from fastapi import APIRouter, Depends, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field

from store import Store, analytics
from store import crm_queries as q
from store.crm_queries import _reading

#: identifiers (client, site, dispatcher): what the engine's ids look like, bounded
ID_PATTERN = r"^[A-Za-z0-9._:\-]{1,64}$"
_CURSOR_PREFIX = "fw1:"
_CURSOR_RE = re.compile(r"^[A-Za-z0-9_\-]{1,40}$")
#: dates the API accepts (anything else is a typo or a fuzzer)
MIN_DATE = dt.date(2000, 1, 1)
MAX_DATE = dt.date(2100, 12, 31)
CRM_SCOPE = "crm:read"
OPS_SCOPE = "ops:read"


class Principal(Protocol):
    def has(self, scope: str) -> bool: ...


class TokenVerifier(Protocol):
    """``fleetwatch.auth.Authenticator``: the principal of a token, or None."""

    def verify(self, token: str | None) -> Principal | None: ...


# --- errors -------------------------------------------------------------------------------------


class BadParameter(Exception):
    """A client's parameter is wrong: 400, naming it and why."""

    def __init__(self, name: str, why: str) -> None:
        super().__init__(f"{name}: {why}")
        self.name = name
        self.why = why


class ErrorBody(BaseModel):
    detail: str = Field(description="what is wrong, for a human")
    parameter: str | None = Field(None, description="the offending parameter (400 only)")


def _bad(name: str, why: str) -> JSONResponse:
    return JSONResponse({"detail": f"{name}: {why}", "parameter": name}, status_code=400)


def _validation_400(exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    first = errors[0] if errors else {}
    loc = [str(x) for x in first.get("loc", ()) if x not in ("query", "header", "path")]
    name = loc[0] if loc else "request"
    return _bad(name, str(first.get("msg", "invalid")))


class _BadRequestRoute(APIRoute):
    """FastAPI answers an unparsable parameter with 422; the CRM contract says 400 + why."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as exc:
                return _validation_400(exc)
            except BadParameter as exc:
                return _bad(exc.name, exc.why)
            except psycopg.OperationalError:
                # down, pool exhausted, or statement_timeout: the client's next try may work
                return JSONResponse(
                    {"detail": "database unavailable or too slow; retry later"},
                    status_code=503,
                    headers={"Retry-After": "5"},
                )

        return route


# --- cursors and checks ---------------------------------------------------------------------------


def encode_cursor(seq: int) -> str:
    """The opaque feed cursor of a seq (url-safe base64, no padding)."""
    return base64.urlsafe_b64encode(f"{_CURSOR_PREFIX}{seq}".encode()).decode().rstrip("=")


def decode_cursor(text: str | None) -> int:
    """The seq of a cursor this API issued; "0" or absent: the beginning."""
    if text is None or text == "0":
        return 0
    if not _CURSOR_RE.match(text):
        raise BadParameter("after", "not a cursor issued by this API (use 0 or a 'next' value)")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise BadParameter("after", "not a cursor issued by this API") from exc
    digits = raw.removeprefix(_CURSOR_PREFIX)
    if raw == digits or not digits.isdigit() or len(digits) > 19 or int(digits) >= 2**63:
        raise BadParameter("after", "not a cursor issued by this API")
    return int(digits)


def _check_date(name: str, value: dt.date | None) -> None:
    if value is not None and not MIN_DATE <= value <= MAX_DATE:
        raise BadParameter(name, f"must be between {MIN_DATE} and {MAX_DATE}")


def _check_range(start: dt.date | None, end: dt.date | None, *, required: bool) -> None:
    if required and start is None:
        raise BadParameter("from", "required (a date, YYYY-MM-DD)")
    if required and end is None:
        raise BadParameter("to", "required (a date, YYYY-MM-DD)")
    _check_date("from", start)
    _check_date("to", end)
    if start is not None and end is not None:
        if end < start:
            raise BadParameter("to", f"{end} is before from={start}")
        if (end - start).days + 1 > q.MAX_RANGE_DAYS:
            raise BadParameter("to", f"range longer than {q.MAX_RANGE_DAYS} days")


# --- response models ------------------------------------------------------------------------


class CommentModel(BaseModel):
    model_config = ConfigDict(extra="ignore")
    by: str
    at: str
    text: str


class ExceptionItem(BaseModel):
    """One version of a visit exception (docs/formats.md, "Visit exceptions"): upsert by id,
    keeping the highest version."""

    model_config = ConfigDict(extra="ignore")
    id: str
    version: int
    kind: Literal["late", "missed", "cancelled", "unplanned"]
    status: Literal["open", "confirmed", "retracted"]
    site_id: str
    client_id: str | None
    service_date: str
    vehicle_id: str | None
    window_start: str | None
    window_end: str | None
    arrival: str | None
    minutes_late: float | None
    comments: list[CommentModel]
    at: str


class SiteArrivalsModel(BaseModel):
    site_id: str
    visits: int
    early: int
    on_time: int
    late: int
    mean_min_after_start: float | None
    p50_min_after_start: float | None
    p90_min_after_end: float | None


class ServiceTimeModel(BaseModel):
    site_id: str
    visits: int
    mean_min: float | None
    p50_min: float | None
    p90_min: float | None


class TravelTimeModel(BaseModel):
    hour_of_day: int
    legs: int
    mean_min: float | None
    p50_min: float | None
    p90_min: float | None


class RouteAnalyticsModel(BaseModel):
    tz: str
    sites_arrivals: list[SiteArrivalsModel]
    sites_service: list[ServiceTimeModel]
    travel_by_hour: list[TravelTimeModel]


@functools.cache
def _zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


class FeedPageModel(BaseModel):
    items: list[ExceptionItem] = Field(description="exception versions in commit order")
    next: str = Field(description="opaque cursor: pass it as `after` for the next page")
    more: bool = Field(description="true when more versions were committed beyond `next`")


class SummaryCount(BaseModel):
    kind: str
    status: str
    count: int


class FeedSummaryModel(BaseModel):
    head: str = Field(description="the feed position these counts are as of (a cursor)")
    current: list[SummaryCount] = Field(
        description="latest version per exception id, counted by kind and status"
    )


class QualityModel(BaseModel):
    due: int = Field(description="planned stops in the range (cancelled ones included)")
    on_time: int = Field(description="visited early or within the window")
    late: int
    late_mean_minutes: float | None
    late_p90_minutes: float | None
    missed: int
    cancelled: int
    pending: int = Field(description="not decided yet")
    on_time_pct: float | None = Field(description="on time / (on time + late + missed) × 100")

    @classmethod
    def of(cls, x: q.Quality) -> QualityModel:
        return cls(
            due=x.due,
            on_time=x.on_time,
            late=x.late,
            late_mean_minutes=x.late_mean_minutes,
            late_p90_minutes=x.late_p90_minutes,
            missed=x.missed,
            cancelled=x.cancelled,
            pending=x.pending,
            on_time_pct=x.on_time_pct,
        )


class SiteQualityModel(QualityModel):
    site_id: str


class ClientQualityModel(BaseModel):
    client_id: str
    total: QualityModel
    sites: list[SiteQualityModel]


class QualityPageModel(BaseModel):
    date_from: dt.date = Field(serialization_alias="from")
    date_to: dt.date = Field(serialization_alias="to")
    clients: list[ClientQualityModel]
    next: str | None = Field(description="pass as `after_client` for the next page; null: last")


class OverdueSiteModel(BaseModel):
    site_id: str
    client_id: str | None
    period_days: int = Field(description="contract period: longest gap between due dates")
    last_visit: dt.date | None
    days_since_visit: int | None
    last_due: dt.date


class OverduePageModel(BaseModel):
    as_of: dt.date
    sites: list[OverdueSiteModel]
    next: str | None = Field(description="pass as `after_site` for the next page; null: last")


class KpiModel(BaseModel):
    received: int
    acknowledged: int
    ack_median_minutes: float | None
    ack_p90_minutes: float | None
    resolved: int
    resolve_median_minutes: float | None
    resolve_p90_minutes: float | None
    within_sla_share: float | None = Field(description="acknowledged within the SLA / received")
    escalations: int

    @classmethod
    def of(cls, k: q.Kpis) -> KpiModel:
        return cls(
            received=k.received,
            acknowledged=k.acknowledged,
            ack_median_minutes=k.ack_median_minutes,
            ack_p90_minutes=k.ack_p90_minutes,
            resolved=k.resolved,
            resolve_median_minutes=k.resolve_median_minutes,
            resolve_p90_minutes=k.resolve_p90_minutes,
            within_sla_share=k.within_sla_share,
            escalations=k.escalations,
        )


class DispatcherKpiModel(KpiModel):
    dispatcher: str


class KpiPageModel(BaseModel):
    date_from: dt.date = Field(serialization_alias="from")
    date_to: dt.date = Field(serialization_alias="to")
    sla_minutes: float
    sla_target_share: float
    meets_target: bool | None = Field(description="overall within_sla_share ≥ target")
    overall: KpiModel
    dispatchers: list[DispatcherKpiModel]


# parameter types shared by the routes (module level: FastAPI resolves the annotations here)
Id = Annotated[str | None, Query(pattern=ID_PATTERN, max_length=64)]
Limit = Annotated[int, Query(ge=1, le=q.MAX_CLIENT_PAGE)]
From = Annotated[dt.date | None, Query(alias="from", description="service date, inclusive")]
To = Annotated[dt.date | None, Query(alias="to", description="service date, inclusive")]

# --- the router -----------------------------------------------------------------------------

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "a parameter is wrong (named in the body)"},
    401: {"model": ErrorBody, "description": "missing or unknown bearer token"},
    403: {"model": ErrorBody, "description": "the token lacks the scope"},
    503: {"model": ErrorBody, "description": "database unavailable; retry later"},
    # a "4XX" entry also keeps FastAPI from documenting its 422, which this API never sends
    "4XX": {"model": ErrorBody, "description": "other client errors (404, 405)"},
}
_CSV_COLUMNS = (
    "client_id",
    "site_id",
    "due",
    "on_time",
    "late",
    "late_mean_minutes",
    "late_p90_minutes",
    "missed",
    "cancelled",
    "pending",
    "on_time_pct",
)


class _StoreSource:
    """Queries through the service's :class:`store.Store` pool (a separate pool is better under
    heavy ingest: see docs/crm-api.md)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def connection(self) -> contextlib.AbstractAsyncContextManager[Any]:
        return self._store._connection()


def crm_router(
    *,
    pool_or_store: q.ConnectionSource | Store,
    tokens: TokenVerifier,
    sla_minutes: float = 10.0,
    sla_target_share: float = 0.95,
    timeout_ms: int = 10_000,
) -> APIRouter:
    """The CRM and ops routes over *pool_or_store* (a psycopg ``AsyncConnectionPool`` or the
    service's Store), authorised by *tokens*; KPIs judge acknowledgement against
    ``sla_minutes`` with the target share ``sla_target_share``; every query is cut at
    ``timeout_ms``."""
    if not 0 < sla_minutes <= 24 * 60:
        raise ValueError(f"sla_minutes={sla_minutes}: 0 < minutes <= 1440")
    if not 0 < sla_target_share <= 1:
        raise ValueError(f"sla_target_share={sla_target_share}: 0 < share <= 1")
    source: q.ConnectionSource = (
        _StoreSource(pool_or_store) if isinstance(pool_or_store, Store) else pool_or_store
    )
    bearer = HTTPBearer(auto_error=False, description="a configured token (fleetwatch.auth)")

    def require(scope: str) -> Callable[..., Coroutine[Any, Any, None]]:
        async def check(
            credentials: HTTPAuthorizationCredentials | None = Depends(bearer),  # noqa: B008
        ) -> None:
            principal = tokens.verify(credentials.credentials if credentials else None)
            if principal is None:
                raise _Unauthorized
            if not principal.has(scope):
                raise _Forbidden(scope)

        return check

    router = APIRouter(route_class=_AuthErrorsRoute, responses=_ERRORS)
    crm = [Depends(require(CRM_SCOPE))]
    ops = [Depends(require(OPS_SCOPE))]

    @router.get(
        "/api/crm/v1/visit-exceptions",
        response_model=FeedPageModel,
        dependencies=crm,
        tags=["crm"],
        summary="Change feed of visit exceptions: every version, in commit order",
    )
    async def visit_exceptions(
        after: Annotated[
            str | None, Query(max_length=64, description="0 or a previous page's `next`")
        ] = None,
        limit: Annotated[int, Query(ge=1, le=q.MAX_FEED_LIMIT)] = 100,
        client_id: Id = None,
        site_id: Id = None,
        date_from: Annotated[dt.date | None, Query(alias="from")] = None,
        date_to: Annotated[dt.date | None, Query(alias="to")] = None,
        kind: Annotated[Literal["late", "missed", "cancelled", "unplanned"] | None, Query()] = None,
    ) -> Response:
        seq = decode_cursor(after)
        _check_range(date_from, date_to, required=False)
        page = await q.feed_page(
            source,
            after_seq=seq,
            limit=limit,
            where=q.FeedFilter(
                client_id=client_id,
                site_id=site_id,
                date_from=date_from,
                date_to=date_to,
                kind=kind,
            ),
            timeout_ms=timeout_ms,
        )
        # the stored bodies are JSON text: validate and re-serialise the page in one pass of
        # pydantic-core (2x the items/s of dicts -> models -> JSON; benchmarks/bench_crm_feed.py)
        text = (
            '{"items":['
            + ",".join(body for _, body in page.items)
            + f'],"next":"{encode_cursor(page.next_seq)}","more":'
            + ("true" if page.more else "false")
            + "}"
        )
        checked = FeedPageModel.model_validate_json(text)
        return Response(checked.model_dump_json(), media_type="application/json")

    @router.get(
        "/api/crm/v1/visit-exceptions/summary",
        response_model=FeedSummaryModel,
        dependencies=crm,
        tags=["crm"],
        summary="Counts of the current exceptions as of a feed position, to reconcile a copy",
    )
    async def visit_exceptions_summary() -> FeedSummaryModel:
        s = await q.feed_summary(source, timeout_ms=timeout_ms)
        return FeedSummaryModel(
            head=encode_cursor(s.head_seq),
            current=[
                SummaryCount(kind=k, status=st, count=n) for (k, st), n in sorted(s.counts.items())
            ],
        )

    async def quality_page(
        date_from: dt.date | None,
        date_to: dt.date | None,
        client_id: str | None,
        after_client: str | None,
        limit: int,
    ) -> QualityPageModel:
        _check_range(date_from, date_to, required=True)
        assert date_from is not None
        assert date_to is not None
        page = await q.service_quality(
            source,
            date_from=date_from,
            date_to=date_to,
            client_id=client_id,
            after_client=after_client,
            limit=limit,
            timeout_ms=timeout_ms,
        )
        return QualityPageModel(
            date_from=date_from,
            date_to=date_to,
            clients=[
                ClientQualityModel(
                    client_id=c.client_id,
                    total=QualityModel.of(c.total),
                    sites=[
                        SiteQualityModel(site_id=s, **QualityModel.of(x).model_dump())
                        for s, x in c.sites
                    ],
                )
                for c in page.clients
            ],
            next=page.next_client,
        )

    @router.get(
        "/api/crm/v1/service-quality",
        response_model=QualityPageModel,
        response_model_by_alias=True,
        dependencies=crm,
        tags=["crm"],
        summary="Service quality per client and per site (JSON, or CSV with Accept: text/csv)",
        responses={200: {"content": {"text/csv": {}}}},
    )
    async def service_quality(
        request: Request,
        date_from: From = None,
        date_to: To = None,
        client_id: Id = None,
        after_client: Id = None,
        limit: Limit = 100,
    ) -> Any:
        page = await quality_page(date_from, date_to, client_id, after_client, limit)
        accept = request.headers.get("accept", "")
        if "text/csv" in accept and "application/json" not in accept:
            return _csv(page)
        return page

    @router.get(
        "/api/crm/v1/service-quality.csv",
        dependencies=crm,
        tags=["crm"],
        summary="Service quality as CSV: a client's total row (site_id empty), then its sites",
        response_class=Response,
        responses={200: {"content": {"text/csv": {}}}},
    )
    async def service_quality_csv(
        date_from: From = None,
        date_to: To = None,
        client_id: Id = None,
        after_client: Id = None,
        limit: Limit = 100,
    ) -> Response:
        return _csv(await quality_page(date_from, date_to, client_id, after_client, limit))

    @router.get(
        "/api/crm/v1/overdue-sites",
        response_model=OverduePageModel,
        dependencies=crm,
        tags=["crm"],
        summary="Sites with no visit within their contract period",
    )
    async def overdue(
        as_of: Annotated[dt.date, Query(description="judge as of this date")],
        client_id: Id = None,
        period_days: Annotated[
            int | None,
            Query(ge=1, le=q.MAX_RANGE_DAYS, description="fixed period instead of the contract's"),
        ] = None,
        after_site: Id = None,
        limit: Annotated[int, Query(ge=1, le=q.MAX_OVERDUE_PAGE)] = 100,
    ) -> OverduePageModel:
        _check_date("as_of", as_of)
        sites, nxt = await q.overdue_sites(
            source,
            as_of=as_of,
            client_id=client_id,
            period_days=period_days,
            after_site=after_site,
            limit=limit,
            timeout_ms=timeout_ms,
        )
        return OverduePageModel(
            as_of=as_of,
            sites=[
                OverdueSiteModel(
                    site_id=s.site_id,
                    client_id=s.client_id,
                    period_days=s.period_days,
                    last_visit=s.last_visit,
                    days_since_visit=s.days_since_visit,
                    last_due=s.last_due,
                )
                for s in sites
            ],
            next=nxt,
        )

    @router.get(
        "/api/ops/v1/route-analytics",
        response_model=RouteAnalyticsModel,
        dependencies=ops,
        tags=["ops"],
        summary="Route-planning figures: arrivals vs window and service time per site, "
        "drive time between consecutive stops by hour of day",
    )
    async def route_analytics(
        tz: Annotated[
            str,
            Query(
                pattern=r"^[A-Za-z_]{1,32}(/[A-Za-z0-9_+\-]{1,32}){0,2}$",
                description="IANA time zone for the hours of day (default Europe/Moscow)",
            ),
        ] = "Europe/Moscow",
    ) -> RouteAnalyticsModel:
        if tz not in _zones():
            raise BadParameter("tz", f"{tz!r} is not an IANA time zone")
        async with _reading(source, timeout_ms) as conn:
            arrivals = await analytics.site_arrivals(conn)
            service = await analytics.service_times(conn)
            travel = await analytics.travel_times_by_hour(conn, tz=tz)
        return RouteAnalyticsModel(
            tz=tz,
            sites_arrivals=[SiteArrivalsModel(**dataclasses.asdict(a)) for a in arrivals],
            sites_service=[ServiceTimeModel(**dataclasses.asdict(x)) for x in service],
            travel_by_hour=[TravelTimeModel(**dataclasses.asdict(t)) for t in travel],
        )

    @router.get(
        "/api/ops/v1/dispatcher-kpis",
        response_model=KpiPageModel,
        response_model_by_alias=True,
        dependencies=ops,
        tags=["ops"],
        summary="Dispatcher KPIs over alerts opened in the range (UTC days)",
    )
    async def dispatcher_kpis(date_from: From = None, date_to: To = None) -> KpiPageModel:
        _check_range(date_from, date_to, required=True)
        assert date_from is not None
        assert date_to is not None
        overall, per = await q.dispatcher_kpis(
            source,
            date_from=date_from,
            date_to=date_to,
            sla_minutes=sla_minutes,
            timeout_ms=timeout_ms,
        )
        share = overall.within_sla_share
        return KpiPageModel(
            date_from=date_from,
            date_to=date_to,
            sla_minutes=sla_minutes,
            sla_target_share=sla_target_share,
            meets_target=None if share is None else share >= sla_target_share,
            overall=KpiModel.of(overall),
            dispatchers=[
                DispatcherKpiModel(dispatcher=d, **KpiModel.of(k).model_dump())
                for d, k in sorted(per.items())
            ],
        )

    return router


class _Unauthorized(Exception):
    pass


class _Forbidden(Exception):
    def __init__(self, scope: str) -> None:
        super().__init__(scope)
        self.scope = scope


class _AuthErrorsRoute(_BadRequestRoute):
    """401/403 from the auth dependency, with no data and the standard header."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except _Unauthorized:
                return JSONResponse(
                    {"detail": "missing or invalid bearer token"},
                    status_code=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
            except _Forbidden as exc:
                return JSONResponse(
                    {"detail": f"the token lacks the scope {exc.scope}"}, status_code=403
                )

        return route


def _csv(page: QualityPageModel) -> Response:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\r\n")
    w.writerow(_CSV_COLUMNS)
    for c in page.clients:
        rows: list[tuple[str, QualityModel]] = [("", c.total)]
        rows.extend((s.site_id, s) for s in c.sites)
        for site, x in rows:
            d = x.model_dump()
            w.writerow(
                [c.client_id, site, *("" if d[k] is None else d[k] for k in _CSV_COLUMNS[2:])]
            )
    headers = {"X-Next-Client": page.next} if page.next else {}
    return Response(out.getvalue(), media_type="text/csv; charset=utf-8", headers=headers)


@contextlib.asynccontextmanager
async def open_crm_pool(
    dsn: str, *, max_size: int = 4, name: str = "fleetwatch-crm"
) -> AsyncIterator[Any]:
    """A pool of its own for the API's reads (autocommit connections), closed on exit (the
    console's ``track`` reads use one too, named ``fleetwatch-console``)."""
    from psycopg_pool import AsyncConnectionPool

    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        dsn,
        min_size=1,
        max_size=max_size,
        open=False,
        kwargs={"autocommit": True},
        timeout=10.0,
        name=name,
    )
    await pool.open(wait=True, timeout=10.0)
    try:
        yield pool
    finally:
        await pool.close()
