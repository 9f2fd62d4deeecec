"""Runpod provider over REST v2 (`{RUNPOD_API_BASE_URL}/v2/pods`), one shared
`httpx.AsyncClient`.

Errors become the provider error families (DESIGN §7): 400 with a capacity detail
is `CapacityError`; 422, 401 and any other 400 are `RequestRejected`; 402 is
`BalanceError`; 403 `OfferingForbidden`; 429 `RateLimited` (with `Retry-After`);
5xx and timeouts `TransientProviderError`. Reads and deletes are retried when
that is safe; a create is never retried blindly: after a timeout or a 5xx the pod
is looked up by its name (the worker id) before anything is decided.

The API key and pod environments (which carry the database DSN) never reach a log,
an exception message or a command line: requests and responses are never logged
whole, and every message is scrubbed of the key.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import structlog
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from ..config import Settings
from ..errors import (
    BalanceError,
    CapacityError,
    OfferingForbidden,
    ProviderError,
    RateLimited,
    RequestRejected,
    TransientProviderError,
)
from ..models import Pod
from .base import PodSpec

log = structlog.get_logger()

# Runpod says "no capacity" only in prose (400 `detail`), in a few wordings.
_CAPACITY_HINTS = ("no longer any instances available", "not enough free gpus", "out of stock")
_RUNNING = frozenset({"PROVISIONING", "STARTING", "RUNNING"})
_GONE = frozenset({"TERMINATED"})


class Pacer:
    """About one request per second sustained, with a small burst: Runpod documents
    no limit beyond 429, so we stay well under a plausible one."""

    def __init__(self, rate_per_sec: float = 1.0, burst: int = 5) -> None:
        self._rate, self._burst = rate_per_sec, float(burst)
        self._tokens, self._last = float(burst), time.monotonic()
        self._lock = asyncio.Lock()

    async def wait(self) -> None:
        async with self._lock:
            now = time.monotonic()
            self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
            self._last = now
            if self._tokens < 1:
                await asyncio.sleep((1 - self._tokens) / self._rate)
                self._tokens, self._last = 1.0, time.monotonic()
            self._tokens -= 1


class RunpodProvider:
    name = "runpod"

    def __init__(
        self,
        settings: Settings,
        client: httpx.AsyncClient | None = None,
        *,
        pacer: Pacer | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        assert settings.runpod_api_key is not None  # checked by Settings for this provider
        self._settings = settings
        self._key = settings.runpod_api_key.get_secret_value()
        self._client = client or httpx.AsyncClient(
            base_url=settings.runpod_api_base_url,
            timeout=httpx.Timeout(30.0, connect=10.0),
        )
        self._auth = {
            "Authorization": f"Bearer {self._key}",
            # which orchestrator asked, for the provider's logs and for ours
            "User-Agent": f"gpu-orchestrator ({settings.orchestrator_id})",
        }
        self._pacer = pacer or Pacer()
        self._sleep = sleep

    # -- requests ---------------------------------------------------------------

    def _scrub(self, text: str) -> str:
        return text.replace(self._key, "<redacted>") if self._key else text

    async def _send(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """One request; the answer's JSON (None for 204/404), or a provider error."""
        await self._pacer.wait()
        try:
            resp = await self._client.request(method, path, json=body, headers=self._auth)
        except httpx.TimeoutException as exc:
            raise TransientProviderError(f"{method} {path}: timed out") from exc
        except httpx.HTTPError as exc:
            raise TransientProviderError(
                self._scrub(f"{method} {path}: {type(exc).__name__}")
            ) from exc
        if resp.status_code == 404 and method != "POST":
            return None  # no such pod (a POST 404 names an unknown template: an error)
        if resp.is_success:
            if resp.status_code == 204 or not resp.content:
                return None
            try:
                return resp.json()
            except ValueError as exc:  # an HTML page from a proxy: no answer at all
                raise TransientProviderError(
                    f"{method} {path}: {resp.status_code} answer is not JSON "
                    f"({resp.headers.get('content-type', 'no content type')})"
                ) from exc
        raise self._error(method, path, resp)

    def _error(self, method: str, path: str, resp: httpx.Response) -> ProviderError:
        try:
            problem = resp.json()
        except ValueError:
            problem = {}
        if not isinstance(problem, dict):
            problem = {}
        detail = self._scrub(
            str(problem.get("detail") or problem.get("title") or resp.reason_phrase)
        )
        message = f"{method} {path}: {resp.status_code} {detail}"[:500]
        status = resp.status_code
        if status == 400 and any(hint in detail.lower() for hint in _CAPACITY_HINTS):
            return CapacityError(message)
        if status == 402:
            return BalanceError(message)
        if status == 403:
            return OfferingForbidden(message)
        if status == 429:
            retry_after = resp.headers.get("Retry-After", "")
            return RateLimited(message, float(retry_after) if retry_after.isdigit() else None)
        if status >= 500:
            return TransientProviderError(message)
        return RequestRejected(message)  # 400 rule, 401, 422: our request is wrong

    async def _safe(self, method: str, path: str) -> Any:
        """A read or a delete: retried on 5xx/timeouts with backoff, and after the
        `Retry-After` a 429 asks for."""
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type((TransientProviderError, RateLimited)),
            stop=stop_after_attempt(4),
            wait=wait_exponential(multiplier=0.5, max=8),
            sleep=self._sleep,
            reraise=True,
        ):
            with attempt:
                try:
                    return await self._send(method, path)
                except RateLimited as exc:
                    await self._sleep(exc.retry_after or 1.0)
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    # -- the provider contract ------------------------------------------------------

    def pod_body(self, spec: PodSpec) -> dict[str, Any]:
        """The create request for one worker, from settings and its offering."""
        s = self._settings
        gpu, _, center = (spec.offering or s.offerings[0]).partition("@")
        body: dict[str, Any] = {
            "name": spec.worker_id,
            "gpu": {"id": gpu, "count": s.runpod_gpu_count},
            "cloud": s.runpod_cloud,
            "disk": s.runpod_container_disk_gb,
            "env": dict(spec.env),
        }
        if s.runpod_template_id:
            body["templateId"] = s.runpod_template_id
        if s.runpod_worker_image:
            body["image"] = s.runpod_worker_image
        if s.runpod_worker_args:
            body["args"] = s.runpod_worker_args
        if center and center != "any":
            body["dataCenterIds"] = [center]
        if s.runpod_ports:
            body["ports"] = list(s.runpod_ports)
        if s.runpod_network_volume_id:
            body["mounts"] = {
                "network": [
                    {"volumeId": s.runpod_network_volume_id, "path": s.runpod_volume_mount_path}
                ]
            }
        elif s.runpod_volume_gb:
            body["mounts"] = {
                "persistent": {"size": s.runpod_volume_gb, "path": s.runpod_volume_mount_path}
            }
        return body

    async def create_pod(self, spec: PodSpec) -> Pod:
        try:
            created = await self._send("POST", "/v2/pods", self.pod_body(spec))
        except TransientProviderError:
            # A timeout or 5xx may still have created the pod: find it by name.
            existing = await self._find(spec.worker_id)
            if existing is not None:
                log.info("pod_found_after_ambiguous_create", worker_id=spec.worker_id)
                return existing
            raise
        try:
            return _pod(created)
        except (KeyError, TypeError, ValueError) as exc:
            # Accepted, but we cannot tell which pod: a later list adopts it by name.
            raise TransientProviderError(
                f"POST /v2/pods: unreadable answer for {spec.worker_id}"
            ) from exc

    async def _find(self, name: str) -> Pod | None:
        return next((pod for pod in await self.list_pods() if pod.name == name), None)

    async def list_pods(self) -> list[Pod]:
        listed = await self._safe("GET", "/v2/pods")
        pods = listed.get("pods") if isinstance(listed, dict) else None
        if not isinstance(pods, list):
            raise TransientProviderError("GET /v2/pods: answer has no pod list")
        out = []
        for raw in pods:
            try:
                pod = _pod(raw)
            except (KeyError, TypeError, ValueError):
                log.warning(
                    "pod_skipped_malformed", keys=sorted(raw) if isinstance(raw, dict) else None
                )
                continue
            if pod.status not in _GONE:
                out.append(pod)
        return out

    async def terminate_pod(self, worker_id: str, pod_id: str | None) -> None:
        """Deletes the pod and confirms it is gone; a 404 is checked, not trusted."""
        if pod_id is None:
            found = await self._find(worker_id)
            if found is None:
                return  # never created, or already gone
            pod_id = found.pod_id
        await self._safe("DELETE", f"/v2/pods/{pod_id}")
        still = await self._safe("GET", f"/v2/pods/{pod_id}")
        if isinstance(still, dict) and str(still.get("status")) not in _GONE:
            raise TransientProviderError(f"pod {pod_id} of {worker_id} still {still.get('status')}")
        if still is None and await self._find(worker_id) is not None:
            raise TransientProviderError(f"pod of {worker_id} still listed after delete")

    async def aclose(self) -> None:
        await self._client.aclose()


def _pod(raw: Any) -> Pod:
    """Raises KeyError, TypeError or ValueError for an answer that is not a pod."""
    if not isinstance(raw, dict):
        raise TypeError(f"a pod is an object, not {type(raw).__name__}")
    status = str(raw.get("status") or "")
    cost = raw.get("cost")
    return Pod(
        pod_id=str(raw["id"]),
        name=str(raw["name"]),
        running=status in _RUNNING,
        status=status,
        cost_per_hr=float(cost) if isinstance(cost, (int, float)) else None,
    )
