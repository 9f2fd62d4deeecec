"""The Runpod fake is only useful if it is honest: it accepts what the OpenAPI document
accepts, rejects (and records) what it rejects, answers in the documented shapes, and
each fault knob does exactly what it says."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fake_runpod import CAPACITY_DETAIL, DEFAULT_API_KEY, FakeRunpod

GPU = "NVIDIA GeForce RTX 4090"
OTHER_GPU = "NVIDIA L40S"


def pod_body(name: Any = "gpu-worker-1", gpu: Any = GPU, **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": "ghcr.io/acme/worker:1", "gpu": {"id": gpu, "count": 1}} | extra


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["detail"], str) and body["detail"]
    return body


@pytest.fixture
def fake() -> FakeRunpod:
    return FakeRunpod()


@pytest.fixture
async def client(fake: FakeRunpod) -> AsyncIterator[httpx.AsyncClient]:
    async with fake.client() as c:
        yield c
    # Whatever a test did, the fake's own answers must match the spec.
    assert fake.response_violations == []


# ---------------------------------------------------------------- happy path


async def test_valid_round_trip_passes_validation(
    fake: FakeRunpod, client: httpx.AsyncClient
) -> None:
    body = pod_body(
        env={"WORKER_ID": "w-1"},
        ports=["8080/http"],
        cloud="COMMUNITY",
        dataCenterIds=["EU-RO-1"],
        disk=40,
        mounts={"persistent": {"size": 20, "path": "/workspace"}},
    )
    created = await client.post("/v2/pods", json=body)
    assert created.status_code == 201, created.text
    pod = created.json()
    assert pod["name"] == "gpu-worker-1"
    assert pod["status"] == "PROVISIONING"
    assert pod["gpu"] == {"id": GPU, "count": 1}
    assert pod["cost"] == 0.44
    assert pod["cloud"] == "COMMUNITY"
    assert pod["dataCenterId"] == "EU-RO-1"
    assert pod["env"] == {"WORKER_ID": "w-1"}  # the spec's Pod echoes env
    assert pod["runtime"] is None and pod["startedAt"] is None

    listed = await client.get("/v2/pods")
    assert listed.status_code == 200
    assert [p["id"] for p in listed.json()["pods"]] == [pod["id"]]
    got = await client.get(f"/v2/pods/{pod['id']}")
    assert got.status_code == 200 and got.json()["name"] == "gpu-worker-1"
    also = await client.get("/v2/pods", params={"includeClusterPods": "true"})
    assert also.status_code == 200

    deleted = await client.delete(f"/v2/pods/{pod['id']}")
    assert deleted.status_code == 204 and deleted.content == b""
    assert_problem(await client.get(f"/v2/pods/{pod['id']}"), 404)
    assert (await client.get("/v2/pods")).json() == {"pods": []}
    assert_problem(await client.delete(f"/v2/pods/{pod['id']}"), 404)

    assert fake.violations == []
    assert fake.live_pods() == []
    assert fake.pods_named("gpu-worker-1", include_deleted=True)[0].status == "TERMINATED"
    assert [(r.method, r.path, r.status) for r in fake.requests][:2] == [
        ("POST", "/v2/pods", 201),
        ("GET", "/v2/pods", 200),
    ]
    assert fake.requests[0].json == body
    assert created.headers["RateLimit-Policy"]


async def test_template_supplies_image_and_merges_env(
    fake: FakeRunpod, client: httpx.AsyncClient
) -> None:
    fake.add_template("tpl1", image="ghcr.io/acme/worker:2", env={"A": "1", "B": "1"})
    body = {"name": "t", "templateId": "tpl1", "gpu": {"id": GPU}, "env": {"B": "2"}}
    created = await client.post("/v2/pods", json=body)
    assert created.status_code == 201, created.text
    assert created.json()["image"] == "ghcr.io/acme/worker:2"
    assert created.json()["env"] == {"A": "1", "B": "2"}
    assert created.json()["template"] is None
    missing = await client.post("/v2/pods", json={**body, "templateId": "nope"})
    assert_problem(missing, 404)
    assert fake.violations == []


# ---------------------------------------------------------------- contract violations


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param({"image": "x", "gpu": {"id": GPU}}, "'name' is a required", id="no-name"),
        pytest.param(pod_body(name=7), "$.name: 7 is not of type 'string'", id="name-type"),
        pytest.param(pod_body(name=""), "$.name", id="empty-name"),
        pytest.param(
            {"name": "n", "image": "x", "gpuTypeIds": [GPU], "gpuCount": 1},
            "additional properties 'gpuCount', 'gpuTypeIds' not allowed",
            id="v1-gpu-fields",
        ),
        pytest.param(pod_body(gpu={"id": GPU}), "$.gpu.id", id="gpu-id-object"),
        pytest.param({**pod_body(), "gpu": GPU}, "$.gpu: ", id="gpu-as-string"),
        pytest.param({**pod_body(), "gpu": {"id": GPU, "count": 0}}, "$.gpu.count", id="count-0"),
        pytest.param(
            {**pod_body(), "gpu": {"id": GPU, "type": "x"}}, "'type' not allowed", id="gpu-extra"
        ),
        pytest.param(pod_body(env=[{"key": "A", "value": "1"}]), "$.env", id="env-list"),
        pytest.param(pod_body(env={"N": 1}), "$.env.N", id="env-int"),
        pytest.param(pod_body(containerDiskInGb=20), "containerDiskInGb", id="v1-disk"),
        pytest.param(pod_body(cloud="ALL"), "$.cloud", id="cloud-enum"),
        pytest.param({"name": "n", "gpu": {"id": GPU}}, "'image' is a required", id="no-image"),
        pytest.param(
            pod_body(mounts={"persistent": {"size": 5, "path": "/w"}}), "size", id="mount-small"
        ),
    ],
)
async def test_invalid_create_body_is_422_and_recorded(
    fake: FakeRunpod, client: httpx.AsyncClient, body: dict[str, Any], expected: str
) -> None:
    problem = assert_problem(await client.post("/v2/pods", json=body), 422)
    assert problem["errors"], problem
    assert any(expected in e for e in problem["errors"]), problem["errors"]
    assert len(fake.violations) == 1
    violation = fake.violations[0]
    assert (violation.method, violation.path, violation.status, violation.kind) == (
        "POST",
        "/v2/pods",
        422,
        "schema",
    )
    assert list(violation.errors) == problem["errors"]
    assert fake.pods == {}


async def test_errors_name_only_the_unknown_fields(client: httpx.AsyncClient) -> None:
    # jsonschema alone would also list `name` and `gpu` as unevaluated here.
    body = pod_body(gpu=OTHER_GPU, bogus=True) | {"gpu": {"id": GPU, "count": -1}}
    problem = assert_problem(await client.post("/v2/pods", json=body), 422)
    assert "$: additional properties 'bogus' not allowed" in problem["errors"]
    assert not any("'name'" in e for e in problem["errors"])


async def test_handler_rules_are_400_and_recorded(
    fake: FakeRunpod, client: httpx.AsyncClient
) -> None:
    both = pod_body(cpu={"id": "cpu5c", "vcpuCount": 4})
    assert "exactly one" in assert_problem(await client.post("/v2/pods", json=both), 400)["detail"]
    neither = {"name": "n", "image": "x"}
    assert_problem(await client.post("/v2/pods", json=neither), 400)
    assert [v.kind for v in fake.violations] == ["rule", "rule"]


async def test_malformed_json_is_400_and_recorded(
    fake: FakeRunpod, client: httpx.AsyncClient
) -> None:
    response = await client.post(
        "/v2/pods", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert_problem(response, 400)
    assert [v.kind for v in fake.violations] == ["malformed"]


async def test_query_parameters_are_validated(fake: FakeRunpod, client: httpx.AsyncClient) -> None:
    # listPods has no `name` filter: a client relying on one would list everything.
    named = assert_problem(await client.get("/v2/pods", params={"name": "w"}), 422)
    assert "query parameter 'name' is not defined for listPods" in named["errors"]
    wrong = assert_problem(await client.get("/v2/pods", params={"includeClusterPods": "yes"}), 422)
    assert wrong["errors"][0].startswith("query.includeClusterPods")
    assert [v.status for v in fake.violations] == [422, 422]


async def test_unknown_routes_and_methods(fake: FakeRunpod, client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/v2/pod"), 404)
    assert_problem(await client.get("/v2/pods/"), 404)
    not_allowed = await client.put("/v2/pods")
    assert_problem(not_allowed, 405)
    assert not_allowed.headers["allow"] == "GET, POST"
    assert_problem(await client.request("DELETE", "/v2/pods/x", json={"a": 1}), 422)
    unimplemented = await client.get("/v2/catalog/gpus")
    assert_problem(unimplemented, 501)
    assert [v.kind for v in fake.violations] == ["route", "route", "route", "schema"]
    assert [r.path for r in fake.unimplemented] == ["/v2/catalog/gpus"]


@pytest.mark.parametrize(
    ("headers", "detail"),
    [
        pytest.param({}, "missing bearer token", id="missing"),
        pytest.param({"Authorization": "Bearer wrong"}, "invalid bearer token", id="wrong-key"),
        pytest.param({"Authorization": DEFAULT_API_KEY}, "invalid bearer token", id="no-scheme"),
    ],
)
async def test_auth_is_required(fake: FakeRunpod, headers: dict[str, str], detail: str) -> None:
    async with httpx.AsyncClient(
        transport=fake.transport(), base_url=fake.base_url, headers=headers
    ) as bare:
        response = await bare.post("/v2/pods", json=pod_body())
    assert assert_problem(response, 401)["detail"] == detail
    assert [(v.kind, v.status) for v in fake.violations] == [("auth", 401)]
    assert fake.pods == {}
    assert fake.response_violations == []


async def test_response_checker_can_fail(fake: FakeRunpod, client: httpx.AsyncClient) -> None:
    original = fake.render

    def broken(pod: Any) -> dict[str, Any]:
        out = original(pod)
        del out["cost"]
        out["status"] = "BOOTING"
        return out

    fake.render = broken  # type: ignore[method-assign]
    await client.post("/v2/pods", json=pod_body())
    [violation] = fake.response_violations
    assert violation.status == 201
    assert any("'cost' is a required property" in e for e in violation.errors)
    assert any("'BOOTING' is not one of" in e for e in violation.errors)
    fake.response_violations.clear()  # the client fixture checks it is empty


# ---------------------------------------------------------------- fault knobs


async def test_capacity_for(fake: FakeRunpod, client: httpx.AsyncClient) -> None:
    fake.capacity_for(GPU)
    problem = assert_problem(await client.post("/v2/pods", json=pod_body()), 400)
    assert problem["detail"] == CAPACITY_DETAIL
    assert "no longer any instances available" in problem["detail"]
    other = await client.post("/v2/pods", json=pod_body("w2", OTHER_GPU))
    assert other.status_code == 201
    fake.restore_capacity()
    assert (await client.post("/v2/pods", json=pod_body("w3"))).status_code == 201
    assert fake.violations == []  # capacity is not the client's fault


async def test_capacity_per_data_center(fake: FakeRunpod, client: httpx.AsyncClient) -> None:
    fake.capacity_for(GPU, data_center_ids=("EU-RO-1",))
    body = pod_body(dataCenterIds=["EU-RO-1", "US-TX-3"])
    created = await client.post("/v2/pods", json=body)
    assert created.json()["dataCenterId"] == "US-TX-3"
    only_ro = pod_body("w2", dataCenterIds=["EU-RO-1"])
    assert_problem(await client.post("/v2/pods", json=only_ro), 400)


async def test_limit_stock(fake: FakeRunpod, client: httpx.AsyncClient) -> None:
    fake.limit_stock(GPU, 1)
    first = await client.post("/v2/pods", json=pod_body("a"))
    assert_problem(await client.post("/v2/pods", json=pod_body("b")), 400)
    await client.delete(f"/v2/pods/{first.json()['id']}")
    assert (await client.post("/v2/pods", json=pod_body("c"))).status_code == 201


async def test_rate_limit(fake: FakeRunpod, client: httpx.AsyncClient) -> None:
    fake.rate_limit(times=2, retry_after=7)
    for _ in range(2):
        limited = await client.get("/v2/pods")
        assert_problem(limited, 429)
        assert limited.headers["Retry-After"] == "7"
    assert (await client.get("/v2/pods")).status_code == 200
    assert fake.violations == []


async def test_server_errors(fake: FakeRunpod, client: httpx.AsyncClient) -> None:
    fake.server_errors(times=1, status=502, method="POST")
    assert (await client.get("/v2/pods")).status_code == 200
    assert_problem(await client.post("/v2/pods", json=pod_body()), 502)
    assert fake.pods == {}
    assert (await client.post("/v2/pods", json=pod_body())).status_code == 201


async def test_fail_create_after_creating(fake: FakeRunpod, client: httpx.AsyncClient) -> None:
    fake.fail_create_after_creating(1)
    assert_problem(await client.post("/v2/pods", json=pod_body()), 500)
    [pod] = fake.pods_named("gpu-worker-1")
    listed = (await client.get("/v2/pods")).json()["pods"]
    assert [p["id"] for p in listed if p["name"] == "gpu-worker-1"] == [pod.id]
    assert (await client.post("/v2/pods", json=pod_body("w2"))).status_code == 201


@pytest.mark.parametrize("after_create", [False, True])
async def test_timeout_next(fake: FakeRunpod, after_create: bool) -> None:
    fake.timeout_next(1, seconds=5.0, after_create=after_create, method="POST")
    async with fake.client(timeout=0.05) as client:
        assert (await client.get("/v2/pods")).status_code == 200  # GET is not affected
        with pytest.raises(httpx.ReadTimeout):
            await client.post("/v2/pods", json=pod_body())
        assert len(fake.pods_named("gpu-worker-1")) == (1 if after_create else 0)
        assert (await client.post("/v2/pods", json=pod_body("w2"))).status_code == 201


async def test_timeout_without_client_timeout_answers_504(fake: FakeRunpod) -> None:
    fake.timeout_next(1, seconds=0.01)
    async with fake.client() as client:
        assert_problem(await client.get("/v2/pods"), 504)


async def test_hide_new_pods_for_reads(fake: FakeRunpod, client: httpx.AsyncClient) -> None:
    fake.hide_new_pods(2)
    pod_id = (await client.post("/v2/pods", json=pod_body())).json()["id"]
    assert_problem(await client.get(f"/v2/pods/{pod_id}"), 404)
    assert (await client.get("/v2/pods")).json()["pods"] == []
    shown = await client.get(f"/v2/pods/{pod_id}")
    assert shown.status_code == 200
    assert len(fake.live_pods()) == 1


async def test_hide_new_pods_for_seconds(fake: FakeRunpod, client: httpx.AsyncClient) -> None:
    fake.hide_new_pods(seconds=3)
    pod_id = (await client.post("/v2/pods", json=pod_body())).json()["id"]
    for _ in range(3):
        assert_problem(await client.get(f"/v2/pods/{pod_id}"), 404)
    fake.advance(3)
    assert (await client.get(f"/v2/pods/{pod_id}")).status_code == 200
    fake.hide_new_pods(0)
    other = (await client.post("/v2/pods", json=pod_body("w2"))).json()["id"]
    assert (await client.get(f"/v2/pods/{other}")).status_code == 200


async def test_fail_deletes(fake: FakeRunpod, client: httpx.AsyncClient) -> None:
    pod_id = (await client.post("/v2/pods", json=pod_body())).json()["id"]
    fake.fail_deletes(1)
    assert_problem(await client.delete(f"/v2/pods/{pod_id}"), 500)
    assert [p.id for p in fake.live_pods()] == [pod_id]
    assert (await client.delete(f"/v2/pods/{pod_id}")).status_code == 204
    assert fake.live_pods() == []


async def test_balance_exhausted(fake: FakeRunpod, client: httpx.AsyncClient) -> None:
    fake.balance_exhausted()
    assert_problem(await client.post("/v2/pods", json=pod_body()), 402)
    assert (await client.get("/v2/pods")).status_code == 200
    fake.balance_exhausted(False)
    assert (await client.post("/v2/pods", json=pod_body())).status_code == 201


async def test_forbid(fake: FakeRunpod, client: httpx.AsyncClient) -> None:
    fake.forbid(GPU)
    assert_problem(await client.post("/v2/pods", json=pod_body()), 403)
    assert (await client.post("/v2/pods", json=pod_body("w2", OTHER_GPU))).status_code == 201
    assert fake.violations == []


# ---------------------------------------------------------------- status progression


async def test_status_follows_the_clock(fake: FakeRunpod, client: httpx.AsyncClient) -> None:
    pod_id = (await client.post("/v2/pods", json=pod_body(ports=["22/tcp"]))).json()["id"]

    async def read() -> dict[str, Any]:
        pod: dict[str, Any] = (await client.get(f"/v2/pods/{pod_id}")).json()
        return pod

    assert (await read())["status"] == "PROVISIONING"
    fake.advance(5)
    assert (await read())["status"] == "STARTING"
    fake.advance(9.9)
    assert (await read())["status"] == "STARTING"
    fake.advance(0.1)
    running = await read()
    assert running["status"] == "RUNNING"
    assert running["startedAt"] == "2026-06-01T12:00:15Z"
    assert running["ssh"]["direct"] is not None
    fake.advance(60)
    assert (await read())["runtime"]["uptime"] == 60

    fake.set_status(pod_id, "EXITED")
    exited = await read()
    assert (exited["status"], exited["cost"]) == ("EXITED", 0.0)


async def test_status_per_read() -> None:
    fake = FakeRunpod(progress="reads")
    async with fake.client() as c:
        pod_id = (await c.post("/v2/pods", json=pod_body())).json()["id"]
        seen = [(await c.get(f"/v2/pods/{pod_id}")).json()["status"] for _ in range(3)]
    assert seen == ["STARTING", "RUNNING", "RUNNING"]
    assert fake.response_violations == []


async def test_injected_clock_and_failed_boots() -> None:
    now = [1000.0]
    fake = FakeRunpod(clock=lambda: now[0], provisioning_seconds=1, starting_seconds=1)
    fake.fail_boots(1, status="ERROR")
    async with fake.client() as c:
        bad = (await c.post("/v2/pods", json=pod_body("bad"))).json()["id"]
        good = (await c.post("/v2/pods", json=pod_body("good"))).json()["id"]
        now[0] += 2
        assert (await c.get(f"/v2/pods/{bad}")).json()["status"] == "ERROR"
        assert (await c.get(f"/v2/pods/{good}")).json()["status"] == "RUNNING"
        assert (await c.get(f"/v2/pods/{bad}")).json()["cost"] == 0.44  # ERROR still bills
    assert fake.response_violations == []


async def test_terminated_can_stay_visible() -> None:
    fake = FakeRunpod(terminated_visible_seconds=30)
    async with fake.client() as c:
        pod_id = (await c.post("/v2/pods", json=pod_body())).json()["id"]
        await c.delete(f"/v2/pods/{pod_id}")
        gone = (await c.get(f"/v2/pods/{pod_id}")).json()
        assert (gone["status"], gone["cost"]) == ("TERMINATED", 0.0)
        assert (await c.get("/v2/pods")).json()["pods"] == []
        fake.advance(30)
        assert (await c.get(f"/v2/pods/{pod_id}")).status_code == 404
    assert fake.violations == [] and fake.response_violations == []


# ---------------------------------------------------------------- real HTTP


async def test_served_over_real_http_with_timeouts(fake: FakeRunpod) -> None:
    headers = {"Authorization": f"Bearer {fake.api_key}"}
    async with (
        fake.serve() as url,
        httpx.AsyncClient(base_url=url, headers=headers, timeout=0.2) as c,
    ):
        assert url.startswith("http://127.0.0.1:")
        created = await c.post("/v2/pods", json=pod_body())
        assert created.status_code == 201
        assert (await c.get(f"/v2/pods/{created.json()['id']}")).status_code == 200
        fake.timeout_next(1, seconds=5.0)
        with pytest.raises(httpx.ReadTimeout):
            await c.get("/v2/pods")
        assert (await c.get("/v2/pods")).status_code == 200
    assert fake.violations == [] and fake.response_violations == []


SUBPROCESS_CLIENT = """
import json, sys, urllib.request
url, key, gpu = sys.argv[1:4]
body = json.dumps({"name": "from-subprocess", "image": "x", "gpu": {"id": gpu}}).encode()
req = urllib.request.Request(url + "/v2/pods", data=body, method="POST", headers={
    "Authorization": "Bearer " + key, "Content-Type": "application/json"})
with urllib.request.urlopen(req, timeout=5) as resp:
    print(resp.status, json.load(resp)["status"])
"""


async def test_subprocess_reaches_async_server(fake: FakeRunpod) -> None:
    async with fake.serve() as url:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", SUBPROCESS_CLIENT, url, fake.api_key, GPU,
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, _ = await asyncio.wait_for(proc.communicate(), 10)
    assert out.decode().split() == ["201", "PROVISIONING"]
    assert len(fake.pods_named("from-subprocess")) == 1


def test_subprocess_reaches_threaded_server() -> None:
    fake = FakeRunpod()
    with fake.serve_in_thread() as url:
        done = subprocess.run(
            [sys.executable, "-c", SUBPROCESS_CLIENT, url, fake.api_key, GPU],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    assert done.stdout.split() == ["201", "PROVISIONING"]
    assert [p.name for p in fake.live_pods()] == ["from-subprocess"]
    assert json.loads(json.dumps(fake.requests[0].json))["name"] == "from-subprocess"
    assert fake.violations == [] and fake.response_violations == []
