"""PostgREST's RPC surface over the real test Postgres: what Supabase's Data API
does for `supabase.rpc(fn, params)`, for the REST store's tests.

`POST /rest/v1/rpc/{fn}` with a JSON object of named arguments, authenticated by
a bearer key (or, as Headless-Wan2GP's heartbeat sends it, an `apikey` header
alone) mapped to a database role, run in one transaction under `SET LOCAL ROLE`
with the key's claims in `request.jwt.claims`, and Supabase's API
`statement_timeout` (8 s). The answer is the function's result as JSON (a
set-returning function: an array of rows; void: null). Errors are PostgREST's
error JSON (`code`, `message`, `details`, `hint`) with its HTTP
status mapping: an unknown function or argument list is 404 `PGRST202`, an
unknown key 401 `PGRST301`, `42501` 401 for anon and 403 otherwise, `P0001` 400,
`23505`/`23503` 409, `42883` 404, `08*` 503, the classes PostgREST answers 500,
anything else 400. The overload is picked by argument names, as PostgREST does.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import asyncpg

_Scope = MutableMapping[str, Any]
_Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
_Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

SERVICE_KEY = "sb_secret_service_role_for_tests"
ANON_KEY = "sb_publishable_anon_for_tests"
WORKER_KEY = "sb_worker_key_for_tests"
DEFAULT_KEYS = {SERVICE_KEY: "service_role", ANON_KEY: "anon", WORKER_KEY: "gpu_worker"}

# PostgREST's status for SQLSTATE classes (docs/references/errors.rst); else 400.
_EXACT = {"23503": 409, "23505": 409, "25006": 405, "P0001": 400, "42883": 404, "42P01": 404}
_CLASSES = {
    "08": 503, "09": 500, "0L": 403, "0P": 403, "25": 500, "28": 403, "2D": 500, "38": 500,
    "39": 500, "3B": 500, "40": 500, "53": 503, "54": 500, "55": 500, "57": 500, "58": 500,
    "F0": 500, "HV": 500, "P0": 500, "XX": 500,
}  # fmt: skip


def _status(sqlstate: str, role: str) -> int:
    if sqlstate == "42501":
        return 401 if role == "anon" else 403
    if sqlstate == "53400":
        return 500
    return _EXACT.get(sqlstate) or _CLASSES.get(sqlstate[:2], 400)


@dataclass
class FakePostgrest:
    dsn: str
    keys: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_KEYS))
    # the Data API's exposed schemas; a request picks one with `Content-Profile`
    # (supabase-py's `.schema(name)`), else the first
    schemas: tuple[str, ...] = ("public",)
    statement_timeout: str = "8s"
    calls: list[tuple[str, str]] = field(default_factory=list)  # (role, function)
    _pool: asyncpg.Pool | None = None

    async def start(self) -> None:
        self._pool = await asyncpg.create_pool(self.dsn, min_size=1, max_size=10)

    async def stop(self) -> None:
        if self._pool is not None:
            await self._pool.close()

    async def __call__(self, scope: _Scope, receive: _Receive, send: _Send) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        status, payload = await self._handle(scope["method"], scope["path"], headers, body)
        data = payload.encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json; charset=utf-8"),
                    (b"content-length", str(len(data)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": data})

    async def _handle(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, str]:
        prefix = "/rest/v1/rpc/"
        if method != "POST" or not path.startswith(prefix):
            return _error(404, "PGRST125", f"Invalid path specified in request URL: {path}")
        bearer = headers.get("authorization", "").removeprefix("Bearer ").strip()
        role = self.keys.get(bearer or headers.get("apikey", ""))
        if role is None:
            return _error(401, "PGRST301", "JWSError JWSInvalidSignature")
        try:
            args = json.loads(body or b"{}")
        except ValueError:
            return _error(400, "PGRST102", "Empty or invalid json")
        if not isinstance(args, dict):
            return _error(400, "PGRST102", "the body must be a JSON object of named arguments")
        fn = path.removeprefix(prefix)
        schema = headers.get("content-profile", self.schemas[0])
        if schema not in self.schemas:
            return _error(
                406,
                "PGRST106",
                f"The schema must be one of the following: {', '.join(self.schemas)}",
            )
        self.calls.append((role, fn))
        assert self._pool is not None
        async with self._pool.acquire() as conn:
            target = await self._resolve(conn, schema, fn, set(args))
            if target is None:
                signature = ", ".join(sorted(args))
                return _error(
                    404,
                    "PGRST202",
                    f"Could not find the function {schema}.{fn}({signature}) in the schema cache",
                    hint="If a new function was created in the database with this name and "
                    "parameters, try reloading the schema cache.",
                )
            sql, params = _call_sql(schema, fn, target, args)
            try:
                async with conn.transaction():
                    await conn.execute(f'set local role "{role}"')
                    # PostgREST hands the key's claims to SQL (`auth.role()` reads them)
                    await conn.execute(
                        "select set_config('request.jwt.claims', $1, true)",
                        json.dumps({"role": role}),
                    )
                    await conn.execute(f"set local statement_timeout = '{self.statement_timeout}'")
                    result = await conn.fetchval(sql, *params)
            except asyncpg.PostgresError as exc:
                state = exc.sqlstate or "XX000"
                return _status(state, role), json.dumps(
                    {
                        "code": state,
                        "message": str(exc),
                        "details": getattr(exc, "detail", None),
                        "hint": getattr(exc, "hint", None),
                    }
                )
        return 200, "null" if result is None else result

    async def _resolve(
        self, conn: asyncpg.Connection, schema: str, fn: str, given: set[str]
    ) -> dict[str, Any] | None:
        """The overload whose named arguments cover `given` and whose required ones
        are all given, as PostgREST picks it."""
        rows = await conn.fetch(
            """select p.proretset, p.prorettype::regtype::text as returns, p.pronargs,
                      p.pronargdefaults, coalesce(p.proargnames, '{}') as names,
                      array(select t::regtype::text from unnest(p.proargtypes) t) as types
               from pg_proc p join pg_namespace n on n.oid = p.pronamespace
               where n.nspname = $1 and p.proname = $2""",
            schema,
            fn,
        )
        for row in rows:
            names = list(row["names"])[: row["pronargs"]]
            required = set(names[: row["pronargs"] - row["pronargdefaults"]])
            if given <= set(names) and required <= given:
                return {
                    "set": row["proretset"],
                    "returns": row["returns"],
                    "types": dict(zip(names, row["types"], strict=True)),
                }
        return None


def _call_sql(
    schema: str, fn: str, target: dict[str, Any], args: dict[str, Any]
) -> tuple[str, list[str]]:
    """`select` of the call, named arguments cast from JSON like PostgREST does (JSON
    null is SQL NULL)."""
    parts: list[str] = []
    params: list[str] = []
    for n, (name, value) in enumerate(args.items(), start=1):
        params.append(json.dumps(value))
        typ = target["types"][name]
        arg = f"nullif(${n}::jsonb, 'null'::jsonb)"
        if typ in ("json", "jsonb"):
            expr = f"{arg}::{typ}"
        elif typ.endswith("[]"):
            expr = f"(select array_agg(x) from jsonb_array_elements_text({arg}) x)::{typ}"
        else:
            expr = f"({arg} #>> '{{}}')::{typ}"
        parts.append(f'"{name}" => {expr}')
    call = f'"{schema}"."{fn}"({", ".join(parts)})'
    if target["set"]:
        return f"select coalesce(json_agg(r), '[]'::json)::text from {call} r", params
    if target["returns"] == "void":
        return f"with c as (select {call}) select null::text from c", params
    return f"select to_json({call})::text", params


def _error(status: int, code: str, message: str, hint: str | None = None) -> tuple[int, str]:
    return status, json.dumps({"code": code, "message": message, "details": None, "hint": hint})
