"""`GET /v1/usage?from=YYYY-MM-DD&to=YYYY-MM-DD`: usage per tenant and UTC day (both ends
included; default today; at most USAGE_DAYS days). An admin key (API_KEYS_FILE's `admin = true`)
sees every tenant; any other key its own (API_KEY's unnamed keys: `_unnamed`); no key, 401, where
keys are required. A service with no keys at all shows everything."""

from __future__ import annotations

import datetime
from typing import Any

from fastapi import Request, Response
from fastapi.responses import JSONResponse

from common import keys
from gateway.store.usage import FIELDS, USAGE_DAYS
from gateway.transport.metering import tenant_of, utc_day
from gateway.transport.process import GatewayState


def bad(param: str, message: str) -> Response:
    return JSONResponse(
        {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": "invalid_" + param}},
        status_code=400,
    )


def day_of(value: str | None, param: str, default: datetime.date) -> datetime.date | str:
    """The date in `value` (or `default`), or the message saying why it is not one."""
    if value is None:
        return default
    try:
        if len(value) != 10:
            raise ValueError
        return datetime.date.fromisoformat(value)
    except ValueError:
        return "`%s` must be a date as YYYY-MM-DD, not %r" % (param, value[:40])


async def usage_response(request: Request, state: GatewayState, now_s: float) -> Response:
    caller = state.keys.identify(request.headers, request.query_params)
    if caller is None:
        return JSONResponse(
            {"error": {"message": "missing or wrong API key", "type": "invalid_request_error", "code": "unauthorized"}},
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )
    today = datetime.date.fromisoformat(utc_day(now_s))
    start = day_of(request.query_params.get("from"), "from", today)
    if isinstance(start, str):
        return bad("from", start)
    end = day_of(request.query_params.get("to"), "to", start if "from" in request.query_params else today)
    if isinstance(end, str):
        return bad("to", end)
    if end < start:
        return bad("to", "`to` (%s) is before `from` (%s)" % (end, start))
    if (end - start).days >= USAGE_DAYS:
        return bad("to", "at most %d days at once (usage is kept %d days)" % (USAGE_DAYS, USAGE_DAYS))
    if not state.keys.enabled or (caller.tenant is not None and caller.tenant.admin):
        tenants = await state.meter.store.tenants()
    else:
        tenants = [tenant_of(caller)]
    days = [(start + datetime.timedelta(days=i)).isoformat() for i in range((end - start).days + 1)]
    await state.meter.flush()  # this gateway's latest counts are in the answer
    rows: list[dict[str, Any]] = await state.meter.store.read(tenants, days)
    return JSONResponse(
        {
            "from": start.isoformat(),
            "to": end.isoformat(),
            "fields": list(FIELDS),
            "unnamed": keys.UNNAMED_TENANT,
            "usage": rows,
        }
    )
