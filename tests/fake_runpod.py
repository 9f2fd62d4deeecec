"""An in-memory fake of the Runpod REST v2 pod API, checked against its OpenAPI document.

`FakeRunpod` is a plain ASGI app. Every request is validated against
`shared/runpod/openapi-v2.json` (OpenAPI 3.1, so JSON Schema draft 2020-12): the
method and path must exist, path/query/header parameters and the JSON body must match
the operation, and `Authorization: Bearer <key>` must carry the fake's key. A request
that breaks the contract is answered the way the spec says (422 with `errors`, 400 for
a handler-level rule, 401, 404/405 for an unknown route) *and* recorded in
`fake.violations`, so a client's tests end with `assert fake.violations == []`.
Every response the fake sends is validated too; mismatches land in
`fake.response_violations` (that list staying empty keeps the fake honest).

Pods live in memory. Their status moves PROVISIONING -> STARTING -> RUNNING on the
fake's own clock (`fake.advance(seconds)`, or an injected `clock`), or one step per
read with `progress="reads"`. No wall-clock sleeps are needed, except for
`timeout_next`, which exists to make a real client timeout fire.

Talking to it:
- in process: `httpx.AsyncClient(transport=fake.transport(), base_url=fake.base_url)`
  (the transport enforces httpx's read timeout, which `httpx.ASGITransport` ignores);
  `fake.client()` does that and adds the bearer header;
- over real HTTP on 127.0.0.1 (e.g. for a subprocess): `async with fake.serve() as url`
  inside a running loop, or `with fake.serve_in_thread() as url` from sync code or when
  the loop will be blocked.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import math
import os
import random
import string
import threading
import time
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterator,
    Mapping,
    MutableMapping,
)
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from http import HTTPStatus
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, unquote

import httpx
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

# A copy of shared/runpod/openapi-v2.json, so a fresh clone tests on its own;
# RUNPOD_OPENAPI_SPEC points at another copy (e.g. a newer document).
SPEC_PATH = Path(
    os.environ.get(
        "RUNPOD_OPENAPI_SPEC",
        Path(__file__).resolve().parent / "data" / "runpod-openapi-v2.json",
    )
)
BASE_URL = "https://api.runpod.io"
DEFAULT_API_KEY = "rp_test_key"

# Capacity exhaustion has no machine-readable code: a 400 whose `detail` says so.
# Both wordings have been seen from Runpod; match on "no longer any instances available".
CAPACITY_DETAIL = (
    "There are no longer any instances available with the requested specifications. "
    "Please refresh and try again."
)
CAPACITY_DETAIL_ALT = (
    "There are no longer any instances available with the request specifications. "
    "Please try again later."
)

STATUSES = ("PROVISIONING", "STARTING", "RUNNING", "EXITED", "ERROR", "TERMINATED")
# `actions` per status (PROVISIONING and RUNNING as in the spec's examples).
ACTIONS: dict[str, list[str]] = {
    "PROVISIONING": ["start", "terminate"],
    "STARTING": ["stop", "terminate"],
    "RUNNING": ["stop", "restart", "terminate"],
    "EXITED": ["start", "terminate"],
    "ERROR": ["restart", "terminate"],
    "TERMINATED": [],
}
DEFAULT_GPU_PRICES: dict[str, float] = {
    "NVIDIA GeForce RTX 4090": 0.44,
    "NVIDIA GeForce RTX 5090": 0.89,
    "NVIDIA RTX A6000": 0.49,
    "NVIDIA L40S": 0.86,
    "NVIDIA A100 80GB PCIe": 1.64,
    "NVIDIA H100 PCIe": 2.39,
}
DEFAULT_DATA_CENTERS = ("US-KS-2", "US-TX-3", "EU-RO-1")
_EPOCH = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
_SPEC_URI = "urn:runpod:openapi-v2"
_Params = dict[str, str]
_Query = dict[str, list[str]]
_Scope = MutableMapping[str, Any]
_Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
_Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
_HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")


# --------------------------------------------------------------------------- records


@dataclass
class RecordedRequest:
    """One request as the fake received it; `status` is filled in once answered."""

    method: str
    path: str
    query: dict[str, list[str]]
    json: Any
    headers: dict[str, str]
    status: int | None = None
    at: float = field(default_factory=time.monotonic)  # real time it arrived


@dataclass(frozen=True)
class Violation:
    """A request (or response) that broke the OpenAPI contract."""

    method: str
    path: str
    status: int  # what the fake answered (or, for responses, sent)
    kind: str  # route | auth | malformed | schema | rule | response
    errors: tuple[str, ...]
    body: Any = None


@dataclass
class FakePod:
    """A pod as the fake stores it. `status` is refreshed on every request/helper call."""

    id: str
    name: str
    request: dict[str, Any]  # the create body, after template merge
    created_at: float  # fake-clock seconds
    gpu_id: str | None
    gpu_count: int
    cloud: str
    data_center_id: str
    price: float  # USD/hour while billable
    boot_outcome: str = "RUNNING"
    status: str = "PROVISIONING"
    forced_status: str | None = None
    reads: int = 0
    hidden_reads: int = 0
    hidden_until: float = -math.inf
    started_at: float | None = None
    deleted_at: float | None = None
    # real (monotonic) times, for tests that check what was live when across processes
    created_real: float = field(default_factory=time.monotonic)
    deleted_real: float | None = None

    @property
    def env(self) -> dict[str, str]:
        return dict(self.request.get("env") or {})

    @property
    def image(self) -> str | None:
        return self.request.get("image")

    @property
    def live(self) -> bool:
        return self.deleted_at is None


@dataclass
class _Response:
    status: int
    body: Any = None  # JSON-able, or None for no body
    headers: dict[str, str] = field(default_factory=dict)
    problem: bool = False
    raw: bytes | None = None  # a body that is not JSON (a proxy's HTML page): sent as is


class _Reject(Exception):
    """Stops handling a request with `response`; a non-empty `kind` records a violation."""

    def __init__(self, response: _Response, kind: str, errors: list[str]) -> None:
        super().__init__(kind)
        self.response = response
        self.kind = kind
        self.errors = errors


def problem(
    status: int,
    detail: str,
    errors: list[str] | None = None,
    headers: dict[str, str] | None = None,
) -> _Response:
    """An RFC 9457 problem (`ErrorResponse`): title, status, detail and maybe errors."""
    body: dict[str, Any] = {"title": HTTPStatus(status).phrase, "status": status, "detail": detail}
    if errors is not None:
        body["errors"] = errors
    return _Response(status, body, dict(headers or {}), problem=True)


# --------------------------------------------------------------------------- the spec


@dataclass(frozen=True)
class Operation:
    method: str
    template: str
    operation_id: str
    pointer: str  # JSON pointer of the operation object inside the document
    parameters: tuple[tuple[dict[str, Any], str], ...]  # (parameter, pointer of its schema)
    body_pointer: str | None  # pointer of the application/json request schema
    body_required: bool
    responses: dict[str, Any]


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


class OpenApiSpec:
    """The OpenAPI document, its operations, and cached schema validators."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        resource = Resource.from_contents(document, default_specification=DRAFT202012)
        self._registry: Registry[Any] = Registry().with_resource(_SPEC_URI, resource)
        self._validators: dict[str, Draft202012Validator] = {}
        self.routes: list[tuple[list[str], dict[str, Operation]]] = []
        for template, item in document["paths"].items():
            ops = {}
            item_ptr = f"/paths/{_escape(template)}"
            for method in _HTTP_METHODS:
                if method in item:
                    ops[method.upper()] = self._operation(template, item, item_ptr, method)
            self.routes.append((template.split("/")[1:], ops))

    @staticmethod
    def load(path: Path = SPEC_PATH) -> OpenApiSpec:
        """The parsed document at `path`, cached per process (validators included)."""
        return _load_spec(path)

    def resolve(self, node: Any, pointer: str) -> tuple[Any, str]:
        """Follow local `$ref`s; returns the target and its pointer."""
        while isinstance(node, dict) and "$ref" in node:
            pointer = node["$ref"].removeprefix("#")
            node = self.document
            for token in pointer.strip("/").split("/"):
                key = token.replace("~1", "/").replace("~0", "~")
                node = node[int(key)] if isinstance(node, list) else node[key]
        return node, pointer

    def _operation(
        self, template: str, item: dict[str, Any], item_ptr: str, method: str
    ) -> Operation:
        op = item[method]
        op_ptr = f"{item_ptr}/{method}"
        params: dict[tuple[str, str], tuple[dict[str, Any], str]] = {}
        for base, ptr in ((item, item_ptr), (op, op_ptr)):  # operation overrides path item
            for i, raw in enumerate(base.get("parameters", [])):
                param, p_ptr = self.resolve(raw, f"{ptr}/parameters/{i}")
                schema_ptr = f"{p_ptr}/schema"
                params[(param["in"], param["name"])] = (param, schema_ptr)
        body_ptr = None
        required = False
        if "requestBody" in op:
            body, b_ptr = self.resolve(op["requestBody"], f"{op_ptr}/requestBody")
            required = bool(body.get("required"))
            if "application/json" in body.get("content", {}):
                body_ptr = f"{b_ptr}/content/{_escape('application/json')}/schema"
        return Operation(
            method=method.upper(),
            template=template,
            operation_id=op.get("operationId", f"{method} {template}"),
            pointer=op_ptr,
            parameters=tuple(params.values()),
            body_pointer=body_ptr,
            body_required=required,
            responses=op.get("responses", {}),
        )

    def match(self, method: str, path: str) -> tuple[Operation | None, list[str], dict[str, str]]:
        """(operation or None, methods allowed on the matched path, path params)."""
        parts = path.split("/")[1:]
        best: tuple[int, dict[str, Operation], dict[str, str]] | None = None
        for segments, ops in self.routes:
            if len(segments) != len(parts):
                continue
            params: dict[str, str] = {}
            literal = 0
            for seg, part in zip(segments, parts, strict=True):
                if seg.startswith("{") and seg.endswith("}"):
                    if not part:
                        break
                    params[seg[1:-1]] = part
                elif seg == part:
                    literal += 1
                else:
                    break
            else:  # a literal segment beats a template one (/registries/delegations)
                if best is None or literal > best[0]:
                    best = (literal, ops, params)
        if best is None:
            return None, [], {}
        _, ops, params = best
        return ops.get(method), sorted(ops), params

    def errors(self, pointer: str, instance: Any, prefix: str = "") -> list[str]:
        validator = self._validators.get(pointer)
        if validator is None:
            validator = Draft202012Validator(
                {"$ref": f"{_SPEC_URI}#{pointer}"},
                registry=self._registry,
                format_checker=Draft202012Validator.FORMAT_CHECKER,
            )
            self._validators[pointer] = validator
        found = sorted(validator.iter_errors(instance), key=lambda e: list(map(str, e.path)))
        out = []
        for err in found:
            where = err.json_path if not prefix else prefix + err.json_path[1:]
            message = err.message
            if err.validator == "unevaluatedProperties" and isinstance(err.instance, dict):
                # A failing subschema evaluates nothing, so jsonschema lists declared
                # properties too; name only the ones no subschema declares.
                unknown = sorted(set(err.instance) - self._declared(err.schema))
                if not unknown:
                    continue  # the other errors already explain the failure
                message = f"additional properties {', '.join(map(repr, unknown))} not allowed"
            out.append(f"{where}: {message}")
        return out

    def _declared(self, schema: Any, seen: frozenset[int] = frozenset()) -> set[str]:
        """Property names a schema declares through properties/allOf/anyOf/oneOf/if/$ref."""
        if not isinstance(schema, dict) or id(schema) in seen:
            return set()
        seen = seen | {id(schema)}
        names = set(schema.get("properties", {}))
        if "$ref" in schema:
            names |= self._declared(self.resolve({"$ref": schema["$ref"]}, "")[0], seen)
        for key in ("allOf", "anyOf", "oneOf"):
            for sub in schema.get(key, []):
                names |= self._declared(sub, seen)
        for key in ("if", "then", "else"):
            names |= self._declared(schema.get(key), seen)
        return names


@lru_cache(maxsize=4)
def _load_spec(path: Path) -> OpenApiSpec:
    if not path.exists():
        raise FileNotFoundError(f"Runpod OpenAPI document not found at {path}")
    return OpenApiSpec(json.loads(path.read_text()))


def _coerce(value: str, schema: dict[str, Any], spec: OpenApiSpec, pointer: str) -> Any:
    """Turn a query/path/header string into the JSON type its schema wants."""
    schema, _ = spec.resolve(schema, pointer)
    types = schema.get("type", "string")
    types = [types] if isinstance(types, str) else list(types)
    if "boolean" in types and value in ("true", "false"):
        return value == "true"
    if "integer" in types:
        with contextlib.suppress(ValueError):
            return int(value)
    if "number" in types:
        with contextlib.suppress(ValueError):
            return float(value)
    return value


# --------------------------------------------------------------------------- the fake


class FakeRunpod:
    """In-memory Runpod REST v2 pods, validated against the OpenAPI document.

    Knobs (plain methods; each counted one applies to the next N matching requests):
    `capacity_for`, `restore_capacity`, `limit_stock`, `rate_limit`, `server_errors`,
    `fail_create_after_creating`, `timeout_next`, `hide_new_pods`, `fail_deletes`,
    `balance_exhausted`, `forbid`, `fail_boots`, `set_status`, `add_template`.
    """

    base_url = BASE_URL

    def __init__(
        self,
        *,
        api_key: str = DEFAULT_API_KEY,
        spec: OpenApiSpec | None = None,
        clock: Callable[[], float] | None = None,
        progress: Literal["clock", "reads"] = "clock",
        provisioning_seconds: float = 5.0,
        starting_seconds: float = 10.0,
        gpu_prices: Mapping[str, float] | None = None,
        default_price: float = 0.5,
        strict_gpu_types: bool = False,
        data_centers: tuple[str, ...] = DEFAULT_DATA_CENTERS,
        terminated_visible_seconds: float = 0.0,
        reject_unknown_query: bool = True,
        validate_responses: bool = True,
        seed: int = 0,
    ) -> None:
        """
        `progress="clock"`: a pod is PROVISIONING for `provisioning_seconds`, STARTING
        for `starting_seconds`, then RUNNING (or its `fail_boots` outcome), measured on
        `clock()` (default: a manual clock that only `advance` moves) plus `advance`.
        `progress="reads"`: every GET that shows the pod moves it one step.
        `strict_gpu_types`: a GPU id missing from `gpu_prices` is a 400 rule violation.
        `terminated_visible_seconds`: after DELETE, GET /v2/pods/{id} keeps answering
        200 with status TERMINATED (cost 0.0) for this long; 0 means 404 at once.
        The list never shows deleted pods.
        `reject_unknown_query`: a query parameter the operation does not define (such as
        `?name=` on listPods) is answered 422 and recorded, instead of being ignored.
        """
        self.api_key = api_key
        self.spec = spec or OpenApiSpec.load()
        self._clock = clock
        self._offset = 0.0
        self._start = self.now()
        self.progress = progress
        self.provisioning_seconds = provisioning_seconds
        self.starting_seconds = starting_seconds
        self.gpu_prices = dict(DEFAULT_GPU_PRICES if gpu_prices is None else gpu_prices)
        self.default_price = default_price
        self.strict_gpu_types = strict_gpu_types
        self.data_centers = data_centers
        self.terminated_visible_seconds = terminated_visible_seconds
        self.reject_unknown_query = reject_unknown_query
        self.validate_responses = validate_responses
        self._random = random.Random(seed)

        self.pods: dict[str, FakePod] = {}  # every pod ever created, deleted ones included
        self.requests: list[RecordedRequest] = []
        self.violations: list[Violation] = []
        self.response_violations: list[Violation] = []
        self.unimplemented: list[RecordedRequest] = []
        self.templates: dict[str, dict[str, Any]] = {}

        # fault state
        self.no_capacity: set[tuple[str, str | None]] = set()  # (gpu id, dc or None=all)
        self.capacity_detail = CAPACITY_DETAIL
        self.stock: dict[str, int] = {}  # gpu id -> max live pods of that type
        self.forbidden: set[str] = set()
        self.balance_empty = False
        self.rate_limited = 0
        self.retry_after = 1
        self._server_errors: list[tuple[int, str | None]] = []
        self.create_fails_after_creating = 0
        self.delete_failures = 0
        self._timeouts: list[tuple[float, bool, str | None]] = []
        self._hide: tuple[int, float] | None = None
        self._boot_failures: list[str] = []
        self._latency: dict[str, tuple[float, float]] = {}  # operationId -> real seconds
        self._latency_random = random.Random(seed)
        self._garbled: list[str | None] = []

    # ------------------------------------------------------------------ clock

    def now(self) -> float:
        base = self._clock() if self._clock is not None else 0.0
        return base + self._offset

    def advance(self, seconds: float) -> None:
        """Move the fake's clock forward (on top of any injected clock)."""
        self._offset += seconds
        self._refresh_all()

    def _iso(self, t: float) -> str:
        stamp = _EPOCH + timedelta(seconds=t - self._start)
        return stamp.isoformat().replace("+00:00", "Z")

    # ------------------------------------------------------------------ knobs

    def capacity_for(
        self,
        *gpu_type_ids: str,
        data_center_ids: tuple[str, ...] | None = None,
        detail: str | None = None,
    ) -> None:
        """POST for these GPU types (optionally only in these data centers) answers 400
        with the capacity `detail`, until `restore_capacity`."""
        for gpu in gpu_type_ids:
            for dc in data_center_ids or (None,):
                self.no_capacity.add((gpu, dc))
        if detail is not None:
            self.capacity_detail = detail

    def restore_capacity(self, *gpu_type_ids: str) -> None:
        """Undo `capacity_for` for these GPU types (all of them when none given)."""
        self.no_capacity = {
            k for k in self.no_capacity if gpu_type_ids and k[0] not in gpu_type_ids
        }

    def limit_stock(self, gpu_type_id: str, max_live_pods: int) -> None:
        """Capacity error once `max_live_pods` live pods of this type exist."""
        self.stock[gpu_type_id] = max_live_pods

    def rate_limit(self, times: int = 1, retry_after: int = 1) -> None:
        """The next `times` requests (any route) get 429 with `Retry-After` seconds."""
        self.rate_limited = times
        self.retry_after = retry_after

    def server_errors(self, times: int = 1, status: int = 503, method: str | None = None) -> None:
        """The next `times` requests (of `method`, if given) get a 5xx; nothing happens."""
        self._server_errors.extend([(status, method)] * times)

    def fail_create_after_creating(self, times: int = 1) -> None:
        """The next `times` creates make the pod but answer 500."""
        self.create_fails_after_creating = times

    def timeout_next(
        self,
        times: int = 1,
        seconds: float = 30.0,
        *,
        after_create: bool = False,
        method: str | None = None,
    ) -> None:
        """The next `times` requests (of `method`, if given) stall `seconds` of real time
        before answering, so a client timeout fires. With `after_create` the request
        takes effect first (a POST creates its pod, a DELETE deletes) and the stalled
        answer is the normal one; without it nothing happens and the answer after the
        stall is a 504."""
        self._timeouts.extend([(seconds, after_create, method)] * times)

    def hide_new_pods(self, reads: int | None = None, *, seconds: float | None = None) -> None:
        """Pods created from now on are invisible (404 on GET, absent from the list)
        for their first `reads` reads (default 1), and/or for `seconds` of fake clock.
        `hide_new_pods(0)` stops it."""
        if reads is None:
            reads = 0 if seconds else 1
        self._hide = None if reads <= 0 and not seconds else (reads, seconds or 0.0)

    def slow(self, operation_id: str, low: float, high: float | None = None) -> None:
        """Every `operation_id` request (e.g. "listPods", "createPod") waits `low`
        seconds of real time (uniform in [low, high] when `high` is given, seeded)
        before it is handled: a slow API. A client that gives up meanwhile does not
        stop it: the request still takes effect, as on a real server."""
        self._latency[operation_id] = (low, low if high is None else high)

    def garble_next(self, times: int = 1, method: str | None = None) -> None:
        """The next `times` requests (of `method`, if given) take effect, but are
        answered 200 with an HTML page instead of JSON (a proxy in the way)."""
        self._garbled.extend([method] * times)

    def fail_deletes(self, times: int = 1) -> None:
        """The next `times` DELETEs answer 500 and leave the pod."""
        self.delete_failures = times

    def balance_exhausted(self, exhausted: bool = True) -> None:
        """Every create answers 402 until called with False."""
        self.balance_empty = exhausted

    def forbid(self, *gpu_type_ids: str) -> None:
        """Creates for these GPU types answer 403 (account cannot access that pool)."""
        self.forbidden.update(gpu_type_ids)

    def fail_boots(self, times: int = 1, status: str = "ERROR") -> None:
        """The next `times` created pods end in `status` (ERROR/EXITED) instead of RUNNING."""
        assert status in STATUSES
        self._boot_failures.extend([status] * times)

    def set_status(self, pod_id: str, status: str) -> None:
        """Force a pod's status from now on (e.g. EXITED after it crashed)."""
        assert status in STATUSES
        self.pods[pod_id].forced_status = status
        self._refresh(self.pods[pod_id])

    def add_existing_pod(self, shown: Mapping[str, Any]) -> FakePod:
        """A pod someone else created (the system we replace), as `GET /pods`
        showed it: it keeps that status until told otherwise."""
        gpu = shown.get("gpu") or {}
        request = {k: shown[k] for k in ("name", "image", "args", "env", "ports") if k in shown}
        pod = FakePod(
            id=shown["id"],
            name=shown["name"],
            request=request | {"gpu": gpu},
            created_at=self.now(),
            gpu_id=gpu.get("id"),
            gpu_count=gpu.get("count", 1),
            cloud=shown.get("cloud", "SECURE"),
            data_center_id=shown.get("dataCenterId", "EU-RO-1"),
            price=self.gpu_prices.get(gpu.get("id"), self.default_price),
            forced_status=shown["status"],
        )
        self.pods[pod.id] = pod
        self._refresh(pod)
        return pod

    def add_template(self, template_id: str, **settings: Any) -> None:
        """Register a pod template (`image`, `env`, `ports`, `disk`, ...) for `templateId`."""
        self.templates[template_id] = settings

    # ------------------------------------------------------------------ helpers

    def pods_named(self, name: str, *, include_deleted: bool = False) -> list[FakePod]:
        self._refresh_all()
        return [p for p in self.pods.values() if p.name == name and (include_deleted or p.live)]

    def live_pods(self) -> list[FakePod]:
        self._refresh_all()
        return [p for p in self.pods.values() if p.live]

    def requests_to(self, method: str, path: str | None = None) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == method and (path is None or r.path == path)]

    def transport(self) -> httpx.AsyncBaseTransport:
        """An httpx transport into this app that honours the client's read timeout."""
        return _TimeoutASGITransport(app=self)

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        """An `httpx.AsyncClient` wired to the fake, with the bearer header set."""
        headers = {"Authorization": f"Bearer {self.api_key}", **kwargs.pop("headers", {})}
        return httpx.AsyncClient(
            transport=self.transport(), base_url=self.base_url, headers=headers, **kwargs
        )

    @contextlib.asynccontextmanager
    async def serve(self, host: str = "127.0.0.1") -> AsyncIterator[str]:
        """Serve over real HTTP/1.1 on an ephemeral port in the running loop; yields
        the base URL (e.g. ``http://127.0.0.1:41234``)."""
        async with serve_asgi(self, host) as url:
            yield url

    @contextlib.contextmanager
    def serve_in_thread(self, host: str = "127.0.0.1") -> Iterator[str]:
        """Like `serve`, but on its own event loop in a daemon thread."""
        ready = threading.Event()
        box: dict[str, Any] = {}

        async def main() -> None:
            server = _HttpServer(self)
            box["url"] = await server.start(host)
            box["loop"] = asyncio.get_running_loop()
            box["stop"] = stop = asyncio.Event()
            ready.set()
            await stop.wait()
            await server.stop()

        thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
        thread.start()
        if not ready.wait(10):
            raise RuntimeError("fake Runpod server did not start")
        try:
            yield box["url"]
        finally:
            box["loop"].call_soon_threadsafe(box["stop"].set)
            thread.join(10)

    # ------------------------------------------------------------------ status

    def _refresh_all(self) -> None:
        for pod in self.pods.values():
            self._refresh(pod)

    def _refresh(self, pod: FakePod) -> None:
        now = self.now()
        if pod.deleted_at is not None:
            pod.status = "TERMINATED"
            return
        if pod.forced_status is not None:
            pod.status = pod.forced_status
            return
        if self.progress == "reads":
            stage = pod.reads
        else:
            age = now - pod.created_at
            stage = 0 if age < self.provisioning_seconds else 1
            if age >= self.provisioning_seconds + self.starting_seconds:
                stage = 2
        status = ("PROVISIONING", "STARTING", pod.boot_outcome)[min(stage, 2)]
        if status == "RUNNING" and pod.started_at is None:
            if self.progress == "clock":
                pod.started_at = pod.created_at + self.provisioning_seconds + self.starting_seconds
            else:
                pod.started_at = now
        pod.status = status

    def _hidden(self, pod: FakePod) -> bool:
        return pod.hidden_reads > 0 or self.now() < pod.hidden_until

    def _read(self, pod: FakePod) -> bool:
        """Count a read of `pod`; False while it is still hidden."""
        if self._hidden(pod):
            pod.hidden_reads = max(0, pod.hidden_reads - 1)
            return False
        pod.reads += 1
        self._refresh(pod)
        return True

    # ------------------------------------------------------------------ rendering

    def render(self, pod: FakePod) -> dict[str, Any]:
        """The pod as the API shows it (schema `Pod`)."""
        body = pod.request
        status = pod.status
        running = status == "RUNNING"
        ports = list(body.get("ports") or [])
        proxy = None
        if status != "PROVISIONING":
            user = f"{pod.id}-64411eb2"
            proxy = {
                "host": "ssh.runpod.io",
                "port": 22,
                "username": user,
                "command": f"ssh {user}@ssh.runpod.io",
            }
        direct = None
        if running and "22/tcp" in ports:
            direct = {
                "host": "195.26.233.3",
                "port": 34446,
                "username": "root",
                "command": "ssh root@195.26.233.3 -p 34446",
            }
        networking: dict[str, Any] = {"enabled": bool(body.get("globalNetworking"))}
        if networking["enabled"]:
            networking |= {"ip": "10.65.1.42", "internalDns": f"{pod.id}.runpod.internal"}
        runtime = None
        if running and pod.started_at is not None:
            runtime = {"uptime": max(0, int(self.now() - pod.started_at)), "ports": []}
        out: dict[str, Any] = {
            "id": pod.id,
            "name": pod.name,
            "image": body.get("image", ""),
            "args": body.get("args", ""),
            "disk": body.get("disk", 20),
            "ports": ports,
            "env": pod.env,
            "registry": body.get("registry"),
            "status": status,
            "actions": list(ACTIONS[status]),
            "mounts": dict(body.get("mounts") or {}),
            "cloud": pod.cloud,
            "dataCenterId": pod.data_center_id,
            "cudaVersion": _cuda_version(body) if pod.gpu_id else None,
            "ssh": {"proxy": proxy, "direct": direct},
            "template": None,  # "the created pod does not retain a link to the template"
            "cost": 0.0 if status in ("EXITED", "TERMINATED") else pod.price,
            "locked": False,
            "globalNetworking": networking,
            "runtime": runtime,
            "createdAt": self._iso(pod.created_at),
            "startedAt": self._iso(pod.started_at) if pod.started_at is not None else None,
        }
        if pod.gpu_id is not None:
            out["gpu"] = {"id": pod.gpu_id, "count": pod.gpu_count}
        else:
            cpu = body["cpu"]
            out["cpu"] = {
                "id": cpu["id"],
                "vcpuCount": cpu["vcpuCount"],
                "memory": 2 * cpu["vcpuCount"],
            }
        return out

    # ------------------------------------------------------------------ ASGI

    async def __call__(self, scope: _Scope, receive: _Receive, send: _Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        assert scope["type"] == "http"
        chunks = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        response = await self.handle(
            scope["method"], scope["path"], query, headers, b"".join(chunks)
        )
        payload = b"" if response.body is None else json.dumps(response.body).encode()
        out_headers = dict(response.headers)
        if response.raw is not None:
            payload = response.raw
            out_headers["content-type"] = "text/html"
        elif response.body is not None:
            ctype = "application/problem+json" if response.problem else "application/json"
            out_headers["content-type"] = ctype
        out_headers["content-length"] = str(len(payload))
        await send(
            {
                "type": "http.response.start",
                "status": response.status,
                "headers": [(k.lower().encode(), v.encode()) for k, v in out_headers.items()],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    async def handle(
        self,
        method: str,
        path: str,
        query: dict[str, list[str]],
        headers: dict[str, str],
        raw_body: bytes,
    ) -> _Response:
        """Route, authenticate, validate, inject faults and answer one request."""
        body: Any = None
        malformed = None
        if raw_body:
            try:
                body = json.loads(raw_body)
            except ValueError as exc:
                malformed = f"request body is not valid JSON: {exc}"
        record = RecordedRequest(method, path, query, body, headers)
        self.requests.append(record)
        op: Operation | None = None
        try:
            op, path_params = self._route(method, path)
            self._authenticate(headers)
            if self.rate_limited > 0:
                self.rate_limited -= 1
                retry = str(self.retry_after)
                raise _Reject(
                    problem(
                        429,
                        "rate limit exceeded for the minute window",
                        headers={"Retry-After": retry},
                    ),
                    "",
                    [],
                )
            if malformed is not None:
                raise _Reject(problem(400, malformed), "malformed", [malformed])
            self._validate_request(op, path_params, query, headers, body, raw_body)
            response = await self._dispatch(op, path_params, query, body, record)
        except _Reject as reject:
            response = reject.response
            if reject.kind:
                self.violations.append(
                    Violation(
                        method, path, response.status, reject.kind, tuple(reject.errors), body
                    )
                )
        if response.status != 401:
            response.headers.setdefault("RateLimit", '"minute";r=59;t=60')
            response.headers.setdefault("RateLimit-Policy", '"minute";q=60;w=60')
        record.status = response.status
        if self.validate_responses and response.raw is None:
            self._check_response(op, method, path, response)
        return response

    # ------------------------------------------------------------------ request checks

    def _route(self, method: str, path: str) -> tuple[Operation, dict[str, str]]:
        op, allowed, params = self.spec.match(method, path)
        if not allowed:
            detail = f"no route for {path}"
            raise _Reject(problem(404, detail), "route", [detail])
        if op is None:
            detail = "The requested method is not allowed for this path."
            resp = problem(405, detail, headers={"Allow": ", ".join(allowed)})
            raise _Reject(resp, "route", [f"{method} {path}: {detail}"])
        return op, params

    def _authenticate(self, headers: dict[str, str]) -> None:
        auth = headers.get("authorization")
        if not auth:
            raise _Reject(problem(401, "missing bearer token"), "auth", ["missing bearer token"])
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or token.strip() != self.api_key:
            raise _Reject(problem(401, "invalid bearer token"), "auth", ["invalid bearer token"])

    def _validate_request(
        self,
        op: Operation,
        path_params: dict[str, str],
        query: dict[str, list[str]],
        headers: dict[str, str],
        body: Any,
        raw_body: bytes,
    ) -> None:
        errors: list[str] = []
        sources: dict[str, Mapping[str, Any]] = {
            "path": path_params,
            "query": query,
            "header": {k.lower(): v for k, v in headers.items()},
        }
        known_query = set()
        for param, schema_ptr in op.parameters:
            where, name = param["in"], param["name"]
            if where == "query":
                known_query.add(name)
            key = name.lower() if where == "header" else name
            if key not in sources.get(where, {}):
                if param.get("required"):
                    errors.append(f"{where} parameter '{name}': required but missing")
                continue
            value = sources[where][key]
            if isinstance(value, list):
                value = value[-1] if len(value) == 1 else value
            schema = self.spec.resolve({"$ref": "#" + schema_ptr}, "")[0]
            if isinstance(value, list):
                items = schema.get("items", {})
                value = [_coerce(v, items, self.spec, schema_ptr + "/items") for v in value]
            elif schema.get("type") == "array" or "array" in (schema.get("type") or []):
                items = schema.get("items", {})
                value = [
                    _coerce(v, items, self.spec, schema_ptr + "/items") for v in value.split(",")
                ]
            else:
                value = _coerce(value, schema, self.spec, schema_ptr)
            errors += self.spec.errors(schema_ptr, value, prefix=f"{where}.{name}")
        if self.reject_unknown_query:
            for name in sorted(set(query) - known_query):
                errors.append(f"query parameter '{name}' is not defined for {op.operation_id}")
        if op.body_pointer is None:
            if raw_body:
                errors.append(f"{op.operation_id} takes no request body")
        elif body is None:
            if op.body_required:
                errors.append("$: request body is required")
        else:
            ctype = headers.get("content-type", "")
            if not ctype.split(";")[0].strip().endswith("json"):
                errors.append(f"content-type must be application/json, got {ctype!r}")
            errors += self.spec.errors(op.body_pointer, body)
        if errors:
            raise _Reject(problem(422, "Request validation failed.", errors), "schema", errors)

    # ------------------------------------------------------------------ handlers

    async def _dispatch(
        self,
        op: Operation,
        params: dict[str, str],
        query: dict[str, list[str]],
        body: Any,
        record: RecordedRequest,
    ) -> _Response:
        for i, (status, only) in enumerate(self._server_errors):
            if only is None or only == op.method:
                del self._server_errors[i]
                return problem(status, "upstream service unavailable")
        stall = None
        for i, (seconds, after, only) in enumerate(self._timeouts):
            if only is None or only == op.method:
                del self._timeouts[i]
                stall = (seconds, after)
                break
        handler = self._handlers().get(op.operation_id)
        if handler is None:
            self.unimplemented.append(record)
            return problem(501, f"{op.operation_id} is not implemented by the fake")
        if op.operation_id in self._latency:
            await asyncio.sleep(self._latency_random.uniform(*self._latency[op.operation_id]))
        for i, only in enumerate(self._garbled):
            if only is None or only == op.method:
                del self._garbled[i]
                handler(params, query, body)
                return _Response(200, raw=b"<html><body>502 Bad Gateway</body></html>")
        if stall is not None and not stall[1]:
            await asyncio.sleep(stall[0])
            return problem(504, "upstream request timed out")
        response = handler(params, query, body)
        if stall is not None:
            await asyncio.sleep(stall[0])
        return response

    def _handlers(self) -> dict[str, Callable[..., _Response]]:
        return {
            "createPod": self._create_pod,
            "listPods": self._list_pods,
            "getPod": self._get_pod,
            "deletePod": self._delete_pod,
        }

    def _create_pod(self, _params: _Params, _query: _Query, body: dict[str, Any]) -> _Response:
        body = self._apply_template(copy.deepcopy(body))
        self._check_rules(body)
        gpu = body.get("gpu")
        gpu_id = gpu["id"] if gpu else None
        if self.balance_empty:
            return problem(402, "insufficient balance to create this pod")
        if gpu_id is not None and gpu_id in self.forbidden:
            return problem(403, f"access denied to GPU pool {gpu_id!r}")
        if gpu_id is not None and self.strict_gpu_types and gpu_id not in self.gpu_prices:
            detail = f"unknown GPU type {gpu_id!r}"
            raise _Reject(problem(400, detail), "rule", [detail])
        dc = self._place(gpu_id, body.get("dataCenterIds") or list(self.data_centers))
        if dc is None:
            return problem(400, self.capacity_detail)
        count = gpu.get("count", 1) if gpu else 0
        price = self.gpu_prices.get(gpu_id, self.default_price) * count if gpu_id else 0.06
        now = self.now()
        pod = FakePod(
            id=self._new_id(),
            name=body["name"],
            request=body,
            created_at=now,
            gpu_id=gpu_id,
            gpu_count=count,
            cloud=body.get("cloud", "SECURE"),
            data_center_id=dc,
            price=round(price, 4),
            boot_outcome=self._boot_failures.pop(0) if self._boot_failures else "RUNNING",
        )
        if self._hide is not None:
            pod.hidden_reads, seconds = self._hide
            pod.hidden_until = now + seconds if seconds else -math.inf
        self.pods[pod.id] = pod
        self._refresh(pod)
        if self.create_fails_after_creating > 0:
            self.create_fails_after_creating -= 1
            return problem(500, "internal error while creating pod")
        return _Response(201, self.render(pod))

    def _apply_template(self, body: dict[str, Any]) -> dict[str, Any]:
        template_id = body.get("templateId")
        if template_id is None:
            return body
        if template_id not in self.templates:
            raise _Reject(problem(404, f"template {template_id!r} not found"), "", [])
        merged = {**self.templates[template_id], **body}
        merged["env"] = {**self.templates[template_id].get("env", {}), **body.get("env", {})}
        return merged

    def _check_rules(self, body: dict[str, Any]) -> None:
        """Cross-field rules the spec leaves to the handler (answered 400)."""
        errors = []
        if ("gpu" in body) == ("cpu" in body):
            errors.append("exactly one of `gpu` or `cpu` must be set")
        mounts = body.get("mounts") or {}
        if "persistent" in mounts and "network" in mounts:
            errors.append("`mounts.persistent` and `mounts.network` are mutually exclusive")
        if "cpu" in body and "persistent" in mounts:
            errors.append("`mounts.persistent` is invalid on a CPU pod")
        gpu = body.get("gpu") or {}
        if gpu.get("allowedCudaVersions") and "minCudaVersion" in gpu:
            errors.append("`gpu.allowedCudaVersions` and `gpu.minCudaVersion` are exclusive")
        if body.get("startJupyter") and "JUPYTER_PASSWORD" not in body.get("env", {}):
            body["env"] = {**body.get("env", {}), "JUPYTER_PASSWORD": "fake-jupyter-password"}
        if errors:
            raise _Reject(problem(400, "; ".join(errors)), "rule", errors)

    def _place(self, gpu_id: str | None, candidates: list[str]) -> str | None:
        if gpu_id is None:
            return candidates[0]
        if (gpu_id, None) in self.no_capacity:
            return None
        limit = self.stock.get(gpu_id)
        if limit is not None:
            live = sum(1 for p in self.pods.values() if p.live and p.gpu_id == gpu_id)
            if live >= limit:
                return None
        return next((dc for dc in candidates if (gpu_id, dc) not in self.no_capacity), None)

    def _new_id(self) -> str:
        alphabet = string.ascii_lowercase + string.digits
        while True:
            pod_id = "".join(self._random.choices(alphabet, k=14))
            if pod_id not in self.pods:
                return pod_id

    def _list_pods(self, _params: _Params, _query: _Query, _body: Any) -> _Response:
        shown = [self.render(p) for p in self.pods.values() if p.live and self._read(p)]
        return _Response(200, {"pods": shown})

    def _visible(self, pod_id: str) -> FakePod | None:
        pod = self.pods.get(pod_id)
        if pod is None:
            return None
        if pod.deleted_at is not None:
            if self.now() - pod.deleted_at < self.terminated_visible_seconds:
                self._refresh(pod)
                return pod
            return None
        return pod if self._read(pod) else None

    def _get_pod(self, params: _Params, _query: _Query, _body: Any) -> _Response:
        pod = self._visible(params["id"])
        if pod is None:
            return problem(404, "pod not found")
        return _Response(200, self.render(pod))

    def _delete_pod(self, params: _Params, _query: _Query, _body: Any) -> _Response:
        pod = self.pods.get(params["id"])
        if pod is None or pod.deleted_at is not None:
            return problem(404, "pod not found")
        if self.delete_failures > 0:
            self.delete_failures -= 1
            return problem(500, "internal error while terminating pod")
        pod.deleted_at = self.now()
        pod.deleted_real = time.monotonic()
        self._refresh(pod)
        return _Response(204)

    # ------------------------------------------------------------------ response checks

    def _check_response(
        self, op: Operation | None, method: str, path: str, response: _Response
    ) -> None:
        errors: list[str] = []
        spec = self.spec
        if op is None:  # unknown route: only the problem shape can be checked
            declared: Any = {
                "content": {
                    "application/problem+json": {
                        "schema": {"$ref": "#/components/schemas/ErrorResponse"}
                    }
                }
            }
            pointer = "/components/responses/NotFoundError"
        else:
            key = str(response.status)
            if key not in op.responses and "default" not in op.responses:
                errors.append(f"status {response.status} is not declared for {op.operation_id}")
            key = key if key in op.responses else "default"
            declared, pointer = spec.resolve(
                op.responses.get(key, {}), f"{op.pointer}/responses/{_escape(key)}"
            )
        content = declared.get("content", {})
        if response.body is None:
            if content:
                errors.append(f"status {response.status} must have a body")
        else:
            ctype = "application/problem+json" if response.problem else "application/json"
            if ctype not in content:
                errors.append(f"content-type {ctype} not declared for status {response.status}")
            else:
                schema_ptr = f"{pointer}/content/{_escape(ctype)}/schema"
                if op is None:
                    schema_ptr = "/components/schemas/ErrorResponse"
                errors += spec.errors(schema_ptr, response.body)
        if response.status == 429 and not response.headers.get("Retry-After", "").isdigit():
            errors.append("429 without an integer Retry-After")
        if errors:
            self.response_violations.append(
                Violation(method, path, response.status, "response", tuple(errors), response.body)
            )


def _cuda_version(body: dict[str, Any]) -> str:
    gpu = body.get("gpu") or {}
    allowed = gpu.get("allowedCudaVersions")
    if allowed:
        return str(allowed[0])
    return str(gpu.get("minCudaVersion") or "12.8")


# --------------------------------------------------------------------------- transports


class _TimeoutASGITransport(httpx.ASGITransport):
    """`httpx.ASGITransport` ignores timeouts; this one applies the read timeout."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeout = request.extensions.get("timeout", {}).get("read")
        if timeout is None:
            return await super().handle_async_request(request)
        try:
            return await asyncio.wait_for(super().handle_async_request(request), timeout)
        except TimeoutError as exc:
            raise httpx.ReadTimeout("fake Runpod did not answer in time", request=request) from exc


async def _call_asgi(
    app: Callable[..., Awaitable[None]],
    method: str,
    target: str,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    path, _, query = target.partition("?")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": unquote(path),
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "headers": headers,
    }
    sent = False
    out: dict[str, Any] = {"body": b""}

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            await asyncio.Event().wait()  # block until cancelled, like a real disconnect
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            out["status"] = message["status"]
            out["headers"] = list(message.get("headers", []))
        else:
            out["body"] += message.get("body", b"")

    await app(scope, receive, send)
    return out["status"], out["headers"], out["body"]


@contextlib.asynccontextmanager
async def serve_asgi(
    app: Callable[..., Awaitable[None]], host: str = "127.0.0.1"
) -> AsyncIterator[str]:
    """Serves any ASGI app over real HTTP/1.1 on an ephemeral port in the running
    loop; yields the base URL (other fakes use it too)."""
    server = _HttpServer(app)
    url = await server.start(host)
    try:
        yield url
    finally:
        await server.stop()


class _HttpServer:
    """A minimal HTTP/1.1 server (keep-alive, Content-Length or chunked bodies)."""

    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        self.app = app
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task[Any]] = set()

    async def start(self, host: str) -> str:
        self.server = await asyncio.start_server(self._connection, host, 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://{host}:{port}"

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.server.wait_closed()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        try:
            while await self._one_request(reader, writer):
                pass
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            self.tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _one_request(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        line = await reader.readline()
        if not line.strip():
            return False
        method, target, version = line.decode("latin-1").rstrip("\r\n").split(" ", 2)
        headers: list[tuple[bytes, bytes]] = []
        while True:
            raw = await reader.readline()
            if raw in (b"\r\n", b"\n", b""):
                break
            name, _, value = raw.decode("latin-1").partition(":")
            headers.append((name.strip().lower().encode(), value.strip().encode("latin-1")))
        lookup = {k: v for k, v in headers}
        if b"chunked" in lookup.get(b"transfer-encoding", b"").lower():
            body = await _read_chunked(reader)
        else:
            length = int(lookup.get(b"content-length", b"0"))
            body = await reader.readexactly(length) if length else b""
        status, out_headers, payload = await _call_asgi(self.app, method, target, headers, body)
        keep = version == "HTTP/1.1" and lookup.get(b"connection", b"").lower() != b"close"
        head = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}"]
        head += [f"{k.decode()}: {v.decode('latin-1')}" for k, v in out_headers]
        head.append(f"connection: {'keep-alive' if keep else 'close'}")
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + payload)
        await writer.drain()
        return keep


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = b""
    while True:
        size = int((await reader.readline()).split(b";")[0].strip(), 16)
        if size == 0:
            while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                pass
            return body
        body += await reader.readexactly(size)
        await reader.readexactly(2)
