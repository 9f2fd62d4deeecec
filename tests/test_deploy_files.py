"""Static checks of the deployment files: Dockerfile, .dockerignore, railway.toml
and .railway/railway.ts, against each other and against the package (console
script, CLI commands, settings, migrations shipped as package data, HTTP routes).
No Docker engine or Railway account is needed."""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
HEALTH_ROUTES = ("/livez", "/readyz")
SECRET_VARIABLES = ("DATABASE_URL", "WORKER_DATABASE_URL", "RUNPOD_API_KEY")
# Compilers and headers: none of them belongs in the runtime image.
BUILD_TOOLS = re.compile(
    r"\b(build-essential|gcc|g\+\+|clang|make|cmake|pkg-config|[\w.+-]+-dev)\b"
)


# ------------------------------------------------------------------ helpers


def _pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _railway_toml() -> dict[str, Any]:
    return tomllib.loads((ROOT / "railway.toml").read_text())


def _railway_ts() -> str:
    return (ROOT / ".railway" / "railway.ts").read_text()


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case
    args: str


@dataclass(frozen=True)
class Stage:
    base: str
    name: str | None
    instructions: tuple[Instruction, ...]

    def all(self, keyword: str) -> list[str]:
        return [i.args for i in self.instructions if i.keyword == keyword]


def _dockerfile_instructions() -> list[Instruction]:
    """Instructions with comments dropped and `\\` continuations joined."""
    out: list[Instruction] = []
    pending = ""
    for raw in (ROOT / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):  # a comment inside a continuation
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, args = full.partition(" ")
        out.append(Instruction(keyword.upper(), args.strip()))
    assert not pending, "the Dockerfile ends inside a line continuation"
    return out


def _dockerfile_stages() -> list[Stage]:
    instructions = _dockerfile_instructions()
    global_args: dict[str, str] = {}
    for ins in instructions:
        if ins.keyword == "FROM":
            break
        if ins.keyword == "ARG" and "=" in ins.args:
            key, _, value = ins.args.partition("=")
            global_args[key.strip()] = value.strip().strip('"')

    def resolve(text: str) -> str:
        return re.sub(r"\$\{?(\w+)\}?", lambda m: global_args.get(m.group(1), m.group(0)), text)

    stages: list[Stage] = []
    current: list[Instruction] | None = None
    base = name = None
    for ins in instructions:
        if ins.keyword == "FROM":
            if current is not None:
                stages.append(Stage(base or "", name, tuple(current)))
            parts = [p for p in ins.args.split() if not p.startswith("--")]
            base = resolve(parts[0])
            name = parts[2] if len(parts) >= 3 and parts[1].lower() == "as" else None
            current = []
        elif current is not None:
            current.append(ins)
    assert current is not None, "the Dockerfile has no FROM"
    stages.append(Stage(base or "", name, tuple(current)))
    return stages


def _exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def _dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """A glob as a regex: `*` and `?` stay within a folder, `**` crosses folders.
    This is Docker's .dockerignore syntax (Go filepath.Match plus `**`) and the
    glob setuptools applies to package-data."""
    pattern = pattern.strip("/")
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out += "[" + pattern[i + 1 : end].replace("!", "^", 1) + "]"
            i = end + 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out + r"\Z")


def _dockerignored(path: str) -> bool:
    """Whether the build context leaves `path` out: a pattern that matches the path
    or one of its parent directories excludes it; later `!` lines re-include."""
    parts = path.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for pattern in _dockerignore_patterns():
        negate = pattern.startswith("!")
        regex = _pattern_regex(pattern[1:] if negate else pattern)
        if any(regex.match(c) for c in candidates):
            excluded = not negate
    return excluded


def _ts_value(key: str) -> str:
    """The literal after `key:` in railway.ts (one occurrence required)."""
    found = re.findall(rf"\b{key}\s*:\s*(\"[^\"]*\"|\d+)", _railway_ts())
    assert len(found) == 1, f"railway.ts states {key} {len(found)} times, want 1: {found}"
    return found[0].strip('"')


def _ts_env() -> dict[str, str]:
    """railway.ts's `env: { NAME: value, ... }` block, values as written."""
    block = re.search(r"\benv\s*:\s*\{(.*?)\n\s*\}", _railway_ts(), re.S)
    assert block, "railway.ts has no env block"
    return dict(re.findall(r"^\s*([A-Z][A-Z0-9_]*)\s*:\s*(.+?),?\s*$", block.group(1), re.M))


# ------------------------------------------------------------------ railway.toml


def test_railway_toml_builds_the_dockerfile() -> None:
    build = _railway_toml()["build"]
    assert build["builder"] == "DOCKERFILE"
    assert (ROOT / build["dockerfilePath"]).is_file()


def test_start_command_is_the_console_script_run() -> None:
    import typer.main

    from gpu_orchestrator.cli import app

    argv = shlex.split(_railway_toml()["deploy"]["startCommand"])
    assert argv[0] in _pyproject()["project"]["scripts"], "not a declared console script"
    assert _pyproject()["project"]["scripts"][argv[0]] == "gpu_orchestrator.cli:main"
    assert argv[1:] == ["run"]
    assert "run" in typer.main.get_command(app).commands  # type: ignore[attr-defined]


def test_health_check_path_is_a_health_route() -> None:
    deploy = _railway_toml()["deploy"]
    assert deploy["healthcheckPath"] in HEALTH_ROUTES
    # readiness, not liveness: a deploy that cannot reach the database must fail
    assert deploy["healthcheckPath"] == "/readyz"
    assert isinstance(deploy["healthcheckTimeout"], int)
    assert 0 < deploy["healthcheckTimeout"] <= 3600


def test_health_routes_are_served() -> None:
    """The health check path (and the Dockerfile's /livez probe) are routes of the
    daemon's HTTP server."""
    http = ROOT / "gpu_orchestrator" / "ops" / "http.py"
    if not http.exists():
        pytest.skip("the HTTP endpoints are not in this tree yet")
    source = http.read_text()
    for route in (_railway_toml()["deploy"]["healthcheckPath"], "/livez"):
        assert f'"{route}"' in source, f"{route} is not a route of ops/http.py"


def test_one_replica_restart_policy_and_draining() -> None:
    from gpu_orchestrator.config import Settings

    deploy = _railway_toml()["deploy"]
    assert deploy["numReplicas"] == 1
    assert deploy["restartPolicyType"] in ("ON_FAILURE", "ALWAYS")
    if deploy["restartPolicyType"] == "ON_FAILURE":
        assert isinstance(deploy["restartPolicyMaxRetries"], int)
        assert deploy["restartPolicyMaxRetries"] > 0
    # numbers, not strings: Railway's parser rejects "10" for drainingSeconds
    for key in ("drainingSeconds", "overlapSeconds"):
        assert isinstance(deploy[key], int) and not isinstance(deploy[key], bool), key
    assert deploy["drainingSeconds"] > 0
    # the drain covers the longest cycle, so SIGKILL never lands mid-cycle
    assert deploy["drainingSeconds"] >= Settings.model_fields["cycle_timeout_sec"].default


def test_railway_files_hold_no_secret_values() -> None:
    for path in (ROOT / "railway.toml", ROOT / ".railway" / "railway.ts"):
        text = path.read_text()
        assert not re.search(r"postgres(ql)?://", text), f"a DSN in {path.name}"
        assert "[variables]" not in text


# ------------------------------------------------------------------ railway.ts


def test_railway_ts_mirrors_railway_toml() -> None:
    deploy = _railway_toml()["deploy"]
    assert _ts_value("start") == deploy["startCommand"]
    assert _ts_value("healthcheck") == deploy["healthcheckPath"]
    assert int(_ts_value("healthcheckTimeout")) == deploy["healthcheckTimeout"]
    assert int(_ts_value("replicas")) == deploy["numReplicas"]
    assert _ts_value("restartPolicyType") == deploy["restartPolicyType"]
    assert int(_ts_value("restartPolicyMaxRetries")) == deploy["restartPolicyMaxRetries"]
    assert int(_ts_value("overlapSeconds")) == deploy["overlapSeconds"]
    assert int(_ts_value("drainingSeconds")) == deploy["drainingSeconds"]


def test_railway_ts_shape() -> None:
    ts = _railway_ts()
    assert re.search(r'from\s+"railway/iac"', ts)
    assert re.search(r"export\s+default\s+defineRailway\(", ts)
    # a named partial: applying the file never touches other services
    assert re.search(r'export\s+const\s+partial\s*=\s*"[a-zA-Z0-9._-]{1,64}"\s*;', ts)


def test_railway_ts_variables_are_settings_and_secrets_are_preserved() -> None:
    from gpu_orchestrator.config import Settings

    env = _ts_env()
    assert "DATABASE_URL" in env, "production must set DATABASE_URL"
    for name, value in env.items():
        assert name.lower() in Settings.model_fields, f"{name} is not a setting"
        if name in SECRET_VARIABLES:
            assert value == "preserve()", f"{name} must be preserve(), never a value"
    assert "PORT" not in env, "Railway injects PORT"


# ------------------------------------------------------------------ Dockerfile


def test_dockerfile_stages() -> None:
    stages = _dockerfile_stages()
    assert len(stages) >= 2, "build in one stage, run in another"
    runtime = stages[-1]
    for stage in stages:
        assert re.fullmatch(r"python:3\.1[12]-slim(-\w+)?", stage.base), stage.base
    # the venv is copied between stages, so its interpreter path must match
    assert len({s.base for s in stages}) == 1
    # the image's Python satisfies requires-python (">=3.N")
    minimum = re.fullmatch(r">=\s*3\.(\d+)", _pyproject()["project"]["requires-python"])
    image = re.match(r"python:3\.(\d+)", runtime.base)
    assert minimum and image and int(image.group(1)) >= int(minimum.group(1))
    copies = runtime.all("COPY")
    assert any(c.startswith(f"--from={stages[0].name} ") for c in copies if stages[0].name)


def test_runtime_stage_runs_gpu_orchestrator_as_non_root() -> None:
    runtime = _dockerfile_stages()[-1]
    users = runtime.all("USER")
    assert users, "the runtime stage sets no USER"
    assert users[-1].split(":")[0] not in ("root", "0")
    cmd = _exec_form(runtime.all("CMD")[-1])
    assert cmd == ["gpu-orchestrator", "run"]
    assert cmd == shlex.split(_railway_toml()["deploy"]["startCommand"])
    assert not runtime.all("ENTRYPOINT"), "Railway's start command replaces ENTRYPOINT"


def test_runtime_stage_has_no_build_tools() -> None:
    runtime = _dockerfile_stages()[-1]
    for run in runtime.all("RUN"):
        if "apt-get install" in run or "apk add" in run:
            assert not BUILD_TOOLS.search(run), f"build tools in the runtime stage: {run}"
    for run in runtime.all("RUN"):
        assert "pip install" not in run, "install in the builder, copy the venv"


def test_runtime_environment_and_port() -> None:
    runtime = _dockerfile_stages()[-1]
    env = " ".join(runtime.all("ENV"))
    assert re.search(r"\bPYTHONUNBUFFERED=1\b", env)
    assert re.search(r"\bPORT=8080\b", env)
    assert "8080" in " ".join(runtime.all("EXPOSE")).split()
    healthchecks = runtime.all("HEALTHCHECK")
    if healthchecks:
        assert any(route in healthchecks[-1] for route in HEALTH_ROUTES)


def test_builder_copies_exist_and_reach_the_build_context() -> None:
    builder = _dockerfile_stages()[0]
    sources: list[str] = []
    for copy in builder.all("COPY"):
        args = [a for a in copy.split() if not a.startswith("--")]
        sources.extend(args[:-1])
    assert "pyproject.toml" in sources and "gpu_orchestrator" in sources
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: no such path"
        assert not _dockerignored(source), f"COPY {source}: excluded by .dockerignore"


def test_migrations_ship_as_package_data() -> None:
    """The image installs the package non-editable; `run` finds the migrations
    with importlib.resources, so each must match a package-data pattern."""
    package_data = _pyproject()["tool"]["setuptools"]["package-data"]["gpu_orchestrator"]
    migrations = sorted((ROOT / "gpu_orchestrator" / "store" / "migrations").iterdir())
    sql = [p for p in migrations if p.suffix == ".sql"]
    assert sql, "no migrations"
    for path in sql:
        rel = path.relative_to(ROOT / "gpu_orchestrator").as_posix()
        # glob semantics, as setuptools applies them: `*` stays within a folder
        assert any(_pattern_regex(pattern).match(rel) for pattern in package_data), rel
        assert not _dockerignored(path.relative_to(ROOT).as_posix()), rel


# ------------------------------------------------------------------ .dockerignore


@pytest.mark.parametrize(
    "path",
    [
        ".venv/bin/python",
        ".git/HEAD",
        "__pycache__/x.pyc",
        "gpu_orchestrator/__pycache__/cli.cpython-311.pyc",
        "gpu_orchestrator/store/__pycache__/migrate.cpython-311.pyc",
        ".env",
        ".env.production",
        ".pytest_cache/v/cache",
        "node_modules/railway/package.json",
    ],
)
def test_dockerignore_excludes(path: str) -> None:
    assert _dockerignored(path)


@pytest.mark.parametrize(
    "path",
    [
        "pyproject.toml",
        "README.md",
        "gpu_orchestrator/cli.py",
        "gpu_orchestrator/py.typed",
        "gpu_orchestrator/store/migrations/0001_schema.sql",
    ],
)
def test_dockerignore_keeps(path: str) -> None:
    assert not _dockerignored(path)


def test_glob_matcher() -> None:
    """The emulation of Docker's (and setuptools') glob matching used above."""
    assert _pattern_regex("**/__pycache__").match("a/b/__pycache__")
    assert _pattern_regex("**/__pycache__").match("__pycache__")
    assert _pattern_regex("*.egg-info").match("gpu_orchestrator.egg-info")
    assert not _pattern_regex("*.egg-info").match("a/gpu_orchestrator.egg-info")
    assert not _pattern_regex(".git").match(".github")
    assert not _pattern_regex("store/*.sql").match("store/migrations/0001_schema.sql")
    assert _pattern_regex("store/migrations/*.sql").match("store/migrations/0001_schema.sql")


# ------------------------------------------------------------------ docs


def test_deploy_doc_states_the_chosen_settings() -> None:
    doc = (ROOT / "docs" / "deploy.md").read_text()
    deploy = _railway_toml()["deploy"]
    assert f"`{deploy['healthcheckPath']}`" in doc
    assert f"`{deploy['startCommand']}`" in doc
    assert f"{deploy['drainingSeconds']} s" in doc
    assert "configuration.md" in doc
    assert "pooler.supabase.com:5432" in doc
