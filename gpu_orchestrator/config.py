"""Settings from environment variables (seed names kept), validated at start.

A bad value is reported as one line naming the variable, the value and what is
accepted (`SettingsError`); the CLI turns it into exit code 2.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlparse

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from .errors import SettingsError
from .models import PolicyConfig
from .store.base import Demand

NonNegInt = Annotated[int, Field(ge=0)]
PositiveSec = Annotated[float, Field(gt=0)]


# Pod env names whose values never enter a fingerprint (nor a log).
# `DEMAND_SQL_FUNCTION`: a call with literal arguments only (the snapshot checks
# the same grammar in SQL, whoever calls it).
_LITERAL = r"(?:true|false|null|-?[0-9]+|'[A-Za-z0-9_ -]*')"
_DEMAND_CALL = re.compile(
    rf"[a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*)?\(\s*(?:{_LITERAL}(?:\s*,\s*{_LITERAL})*)?\s*\)"
)
_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSW|DSN|URL|CREDENTIAL", re.IGNORECASE)


def lease_margin(lease_sec: float) -> float:
    """Kept between a cycle's deadline and its lease's end, so that a request still
    in flight when the cycle is cancelled lands before anyone else may lead."""
    return max(1.0, 0.1 * lease_sec)


def cycle_budget(cycle_timeout_sec: float, lease_sec: float) -> float:
    """How long one cycle may run: `CYCLE_TIMEOUT_SEC`, and never past its lease."""
    return min(cycle_timeout_sec, lease_sec - lease_margin(lease_sec))


def _default_data_dir() -> Path:
    return Path.home() / ".local" / "share" / "gpu-orchestrator"


class Settings(BaseSettings):
    """Every environment variable the orchestrator and its worker agent read."""

    # allow_inf_nan: `inf` or `nan` in a number setting is a typo, never a wish
    model_config = SettingsConfigDict(
        case_sensitive=False, extra="ignore", frozen=True, allow_inf_nan=False
    )

    # state store
    database_url: SecretStr | None = None
    orchestrator_data_dir: Path = Field(default_factory=_default_data_dir)
    # leave the embedded Postgres this process started running when it exits
    embedded_postgres_keep: bool = False
    # the REST store (Supabase's Data API), used when DATABASE_URL is unset
    supabase_url: str | None = None
    supabase_service_role_key: SecretStr | None = None
    # what workers present on the REST path: a key for the `gpu_worker` role, never
    # the service role key (which bypasses RLS) nor the anon key (which browsers hold)
    supabase_worker_key: SecretStr | None = None

    # provider
    orchestrator_provider: Literal["local", "runpod"] | None = None
    runpod_api_key: SecretStr | None = None
    worker_name_prefix: Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{0,30}$")] = "gpu"
    # ordered preferences; `RUNPOD_GPU_TYPE` (one type) is accepted too
    runpod_gpu_types: Annotated[tuple[str, ...], NoDecode] = ()
    runpod_gpu_type: str | None = None
    runpod_data_center_ids: Annotated[tuple[str, ...], NoDecode] = ()
    # the local pod's entrypoint (a shell command); unset: `python -m gpu_orchestrator worker`
    local_worker_command: str | None = None
    runpod_api_base_url: str = "https://api.runpod.io"
    runpod_worker_image: str | None = None
    runpod_template_id: str | None = None
    runpod_gpu_count: Annotated[int, Field(ge=1, le=8)] = 1
    runpod_cloud: Literal["SECURE", "COMMUNITY"] = "SECURE"
    runpod_container_disk_gb: Annotated[int, Field(ge=1)] = 50
    runpod_network_volume_id: str | None = None
    runpod_volume_gb: Annotated[int, Field(ge=10)] | None = None  # a persistent pod volume
    runpod_volume_mount_path: str = "/workspace"
    runpod_ports: Annotated[tuple[str, ...], NoDecode] = ()
    # the database DSN pods use (defaults to DATABASE_URL); it reaches pods via env only
    worker_database_url: SecretStr | None = None

    # scaling
    min_active_gpus: NonNegInt = 0
    max_active_gpus: NonNegInt = 4
    tasks_per_gpu_threshold: Annotated[int, Field(ge=1)] = 3
    machines_to_keep_idle: NonNegInt = 0
    gpu_overcapacity_idle_timeout_sec: Annotated[float, Field(ge=0)] = 300
    min_worker_lifetime_sec: Annotated[float, Field(ge=0)] = 300
    max_spawns_per_cycle: Annotated[int, Field(ge=1)] = 4

    # health
    spawning_timeout_sec: PositiveSec = 600
    gpu_idle_timeout_sec: PositiveSec = 300
    task_stuck_timeout_sec: PositiveSec = 3600
    # per task type (`fnmatch` patterns, first match wins; 0: never judged stuck):
    # the app's orchestrator tasks wait hours for their children
    task_stuck_timeout_by_type: Annotated[tuple[tuple[str, float], ...], NoDecode] = (
        ("*_orchestrator", 0.0),
    )
    # demand: queued GPU tasks (`run_type` 'gpu') of these types (unset: all), or
    # what this SQL function answers, e.g. `count_eligible_tasks_service_role(false, 'gpu')`
    gpu_task_types: Annotated[tuple[str, ...], NoDecode] = ()
    demand_sql_function: str | None = None
    graceful_shutdown_timeout_sec: PositiveSec = 600
    max_task_attempts: Annotated[int, Field(ge=1)] = 3

    # breaker (DESIGN §5; read by the breaker policy)
    max_worker_failure_rate: Annotated[float, Field(ge=0, le=1)] = 0.8
    failure_window_minutes: PositiveSec = 30
    min_workers_for_rate_check: Annotated[int, Field(ge=1)] = 5
    breaker_probe_interval_sec: PositiveSec = 300
    breaker_probe_max_interval_sec: PositiveSec = 3600
    breaker_evidence_sec: PositiveSec = 300
    capacity_backoff_sec: PositiveSec = 60
    capacity_backoff_max_sec: PositiveSec = 1800

    # loop & ops
    orchestrator_poll_sec: PositiveSec = 30
    orchestrator_id: str = Field(default_factory=lambda: f"{os.uname().nodename}-{os.getpid()}")
    leader_lease_sec: Annotated[float, Field(ge=2)] = 90
    # a cycle never outlives its lease: the deadline is the sooner of this and the
    # lease less its margin (`cycle_budget_sec`)
    cycle_timeout_sec: PositiveSec = 60
    # a pod or intent row younger than this may not show up in the pod list yet
    pod_grace_sec: PositiveSec = 120
    # a pod missing from every list this long, of a worker silent this long, vanished
    pod_missing_sec: PositiveSec = 60
    action_concurrency: Annotated[int, Field(ge=1, le=64)] = 8
    # observe and decide every cycle, write nothing, mutate no pod: what it would do
    # is logged and shown (beside the system we replace, before switching over)
    shadow: bool = False
    # HTTP endpoints (/livez, /readyz, /metrics, /status); Railway injects PORT
    port: Annotated[int, Field(ge=0, le=65535)] | None = None
    log_format: Literal["json", "console"] | None = None
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    # alerts (gpu_orchestrator/ops/alerts.py)
    alert_webhook_url: SecretStr | None = None
    alert_webhook_format: Literal["slack", "generic"] | None = None
    alert_webhook_timeout_sec: Annotated[float, Field(gt=0, le=60)] = 5
    alert_cooldown_sec: Annotated[float, Field(ge=0)] = 900
    alert_failure_rate: Annotated[float, Field(ge=0, le=1)] = 0.5
    alert_heartbeat_stale_sec: PositiveSec = 120
    alert_no_worker_minutes: Annotated[float, Field(ge=0)] = 5
    alert_capacity_minutes: Annotated[float, Field(ge=0)] = 15
    alert_task_failure_rate: Annotated[float, Field(ge=0, le=1)] = 0.5
    alert_task_failure_min_sample: Annotated[int, Field(ge=1)] = 5
    alert_store_unreadable_cycles: Annotated[int, Field(ge=1)] = 3

    # worker agent
    worker_id: str | None = None
    worker_heartbeat_sec: PositiveSec = 20
    worker_poll_sec: PositiveSec = 2
    worker_task_command: str | None = None
    worker_health_port: Annotated[int, Field(ge=0, le=65535)] | None = None
    # below TASK_STUCK_TIMEOUT_SEC: a task is given up by its worker before the
    # orchestrator judges the worker stuck
    worker_task_timeout_sec: PositiveSec = 3000
    system_logs_retention_days: PositiveSec = 14
    # extra pod environment, `KEY=VALUE,KEY=VALUE`
    runpod_worker_env: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    # the arguments the image's entrypoint is started with (Runpod's `args`)
    runpod_worker_args: str | None = None
    # what pods run: our agent, or Headless-Wan2GP's worker.py (an adopted database),
    # which reads SUPABASE_URL, SUPABASE_SERVICE_ROLE_KEY and WORKER_ID
    worker_kind: Literal["agent", "headless-wan2gp"] = "agent"

    @model_validator(mode="before")
    @classmethod
    def _parse_lists(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in list(data):
                value = data[key]
                if not isinstance(value, str):
                    continue
                if key.lower() == "runpod_worker_env":
                    data[key] = _parse_pairs(value)
                elif key.lower() == "task_stuck_timeout_by_type":
                    data[key] = _parse_limits(value)
                elif key.lower() in (
                    "runpod_gpu_types",
                    "runpod_data_center_ids",
                    "runpod_ports",
                    "gpu_task_types",
                ):
                    data[key] = tuple(filter(None, (part.strip() for part in value.split(","))))
        return data

    @model_validator(mode="after")
    def _check_dsns(self) -> Settings:
        for name, dsn in (
            ("DATABASE_URL", self.database_url),
            ("WORKER_DATABASE_URL", self.worker_database_url),
        ):
            if dsn is not None:
                problem = dsn_problem(dsn.get_secret_value())
                if problem is not None:
                    shown = redact_dsn(dsn.get_secret_value())
                    raise ValueError(
                        f"{name}={shown}: {problem} "
                        "(expected postgresql://user:password@host:port/database)"
                    )
        return self

    @model_validator(mode="after")
    def _check_bounds(self) -> Settings:
        call = self.demand_sql_function
        if call is not None and not _DEMAND_CALL.fullmatch(call):
            raise ValueError(
                f"DEMAND_SQL_FUNCTION={call!r}: expected a function call with literal "
                "arguments, e.g. count_eligible_tasks_service_role(false, 'gpu')"
            )
        if self.worker_kind == "headless-wan2gp" and (
            self.supabase_url is None or self.supabase_service_role_key is None
        ):
            raise ValueError(
                "WORKER_KIND=headless-wan2gp: its pods need SUPABASE_URL and "
                "SUPABASE_SERVICE_ROLE_KEY (worker.py heartbeats and claims through Supabase)"
            )
        url = self.alert_webhook_url
        if url is not None and not url.get_secret_value().startswith(("http://", "https://")):
            raise ValueError("ALERT_WEBHOOK_URL=<hidden>: must be an http(s) URL")
        if self.breaker_probe_interval_sec > self.breaker_probe_max_interval_sec:
            raise ValueError(
                f"BREAKER_PROBE_INTERVAL_SEC={self.breaker_probe_interval_sec:g}: must be at most "
                f"BREAKER_PROBE_MAX_INTERVAL_SEC ({self.breaker_probe_max_interval_sec:g})"
            )
        if self.capacity_backoff_sec > self.capacity_backoff_max_sec:
            raise ValueError(
                f"CAPACITY_BACKOFF_SEC={self.capacity_backoff_sec:g}: must be at most "
                f"CAPACITY_BACKOFF_MAX_SEC ({self.capacity_backoff_max_sec:g})"
            )
        if self.supabase_url is not None and not self.supabase_url.startswith(
            ("http://", "https://")
        ):
            raise ValueError(f"SUPABASE_URL={self.supabase_url}: must be an http(s) URL")
        if (self.supabase_url is None) != (
            self.supabase_service_role_key is None and self.supabase_worker_key is None
        ):
            raise ValueError(
                "SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY (or, for a worker, "
                "SUPABASE_WORKER_KEY) go together: set both or neither"
            )
        if self.worker_database_url is not None and self.database_url is None:
            raise ValueError(
                "WORKER_DATABASE_URL is set but DATABASE_URL is not: the orchestrator would "
                "use its embedded database while pods use another; set DATABASE_URL too"
            )
        if self.provider_name == "runpod":
            self._check_runpod()
        if self.worker_task_timeout_sec >= self.task_stuck_timeout_sec:
            raise ValueError(
                f"WORKER_TASK_TIMEOUT_SEC={self.worker_task_timeout_sec:g}: must be below "
                f"TASK_STUCK_TIMEOUT_SEC ({self.task_stuck_timeout_sec:g}), or a slow task "
                "fails its worker as stuck instead of failing alone"
            )
        if self.min_active_gpus > self.max_active_gpus:
            raise ValueError(
                f"MIN_ACTIVE_GPUS={self.min_active_gpus}: must be at most "
                f"MAX_ACTIVE_GPUS ({self.max_active_gpus})"
            )
        return self

    def _check_runpod(self) -> None:
        if self.runpod_api_key is None:
            raise ValueError("RUNPOD_API_KEY is unset: required with ORCHESTRATOR_PROVIDER=runpod")
        if not (self.runpod_worker_image or self.runpod_template_id):
            raise ValueError(
                "RUNPOD_WORKER_IMAGE and RUNPOD_TEMPLATE_ID are unset: the runpod provider "
                "needs one of them"
            )
        if not self.offerings:
            raise ValueError("RUNPOD_GPU_TYPES is unset: name at least one GPU type")
        rest_workers = self.supabase_url is not None and self.supabase_worker_key is not None
        if self.worker_database_url is None and self.database_url is None and not rest_workers:
            raise ValueError(
                "WORKER_DATABASE_URL and DATABASE_URL are unset: Runpod workers cannot reach "
                "the embedded database; set DATABASE_URL (or WORKER_DATABASE_URL), or "
                "SUPABASE_URL with SUPABASE_WORKER_KEY for the REST path"
            )
        if self.runpod_network_volume_id and self.runpod_volume_gb:
            raise ValueError(
                "RUNPOD_NETWORK_VOLUME_ID and RUNPOD_VOLUME_GB are both set: a pod takes one"
            )

    @property
    def store_kind(self) -> str:
        """`postgres` (DATABASE_URL), `supabase` (the REST store: SUPABASE_URL and a
        key, no DATABASE_URL) or `embedded` (neither)."""
        if self.database_url is not None:
            return "postgres"
        if self.supabase_url is not None:
            return "supabase"
        return "embedded"

    @property
    def provider_name(self) -> str:
        if self.orchestrator_provider is not None:
            return self.orchestrator_provider
        return "runpod" if self.runpod_api_key is not None else "local"

    @property
    def launch_fingerprint(self) -> str:
        """12 hex digits naming what a launch runs: provider, image or template,
        start command, GPU types and the pod env (values of names that look
        secret are left out). A deploy that changes any of them is a new one."""
        env = {
            k: (None if _SECRET_NAME.search(k) else v) for k, v in self.runpod_worker_env.items()
        }
        parts = {
            "provider": self.provider_name,
            "image": self.runpod_worker_image,
            "template": self.runpod_template_id,
            "command": self.local_worker_command,
            "args": self.runpod_worker_args,
            "worker_kind": self.worker_kind,
            "task_command": self.worker_task_command,
            "offerings": self.offerings,
            "env": env,
        }
        digest = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()
        return digest[:12]

    @property
    def cycle_budget_sec(self) -> float:
        return cycle_budget(self.cycle_timeout_sec, self.leader_lease_sec)

    @property
    def worker_dsn(self) -> str | None:
        """The DSN pods get: `WORKER_DATABASE_URL`, else `DATABASE_URL`."""
        chosen = self.worker_database_url or self.database_url
        return None if chosen is None else chosen.get_secret_value()

    @property
    def offerings(self) -> tuple[str, ...]:
        """Where a pod may go, in order: GPU type x data center ("type@dc")."""
        if self.provider_name == "local":
            return ("local",)
        types = self.runpod_gpu_types or tuple(filter(None, [self.runpod_gpu_type]))
        centers = self.runpod_data_center_ids or ("any",)
        return tuple(f"{gpu}@{dc}" for gpu in types for dc in centers)

    def demand(self) -> Demand:
        return Demand(self.gpu_task_types, self.demand_sql_function)

    def policy(self) -> PolicyConfig:
        return PolicyConfig(
            min_active_gpus=self.min_active_gpus,
            max_active_gpus=self.max_active_gpus,
            tasks_per_gpu_threshold=self.tasks_per_gpu_threshold,
            machines_to_keep_idle=self.machines_to_keep_idle,
            overcapacity_idle_timeout_sec=self.gpu_overcapacity_idle_timeout_sec,
            min_worker_lifetime_sec=self.min_worker_lifetime_sec,
            max_spawns_per_cycle=self.max_spawns_per_cycle,
            spawning_timeout_sec=self.spawning_timeout_sec,
            gpu_idle_timeout_sec=self.gpu_idle_timeout_sec,
            task_stuck_timeout_sec=self.task_stuck_timeout_sec,
            task_stuck_timeout_by_type=self.task_stuck_timeout_by_type,
            graceful_shutdown_timeout_sec=self.graceful_shutdown_timeout_sec,
            max_task_attempts=self.max_task_attempts,
            max_worker_failure_rate=self.max_worker_failure_rate,
            failure_window_sec=self.failure_window_minutes * 60,
            min_workers_for_rate_check=self.min_workers_for_rate_check,
            breaker_probe_interval_sec=self.breaker_probe_interval_sec,
            breaker_probe_max_interval_sec=self.breaker_probe_max_interval_sec,
            breaker_evidence_sec=self.breaker_evidence_sec,
            capacity_backoff_sec=self.capacity_backoff_sec,
            capacity_backoff_max_sec=self.capacity_backoff_max_sec,
            offerings=self.offerings,
            name_prefix=self.worker_name_prefix,
            fingerprint=self.launch_fingerprint,
            pod_grace_sec=self.pod_grace_sec,
            pod_missing_sec=self.pod_missing_sec,
            # two whole cycles (each: its budget, then a poll) without contact
            observation_gap_sec=2 * (self.orchestrator_poll_sec + self.cycle_budget_sec),
        )

    def redacted(self) -> dict[str, Any]:
        """The effective settings with every secret hidden (for `config` and logs)."""
        out: dict[str, Any] = {"store": self.store_kind}
        for name, value in self.model_dump().items():
            if name in ("database_url", "worker_database_url") and value is not None:
                out[name] = redact_dsn(value.get_secret_value())
            elif isinstance(value, SecretStr):
                out[name] = "**********"
            elif name == "runpod_worker_env":
                out[name] = {k: "**********" for k in value}
            else:
                out[name] = str(value) if isinstance(value, Path) else value
        out["orchestrator_provider"] = self.provider_name  # the effective one
        return out


def setting_name(raw: str) -> str:
    """`raw` as the environment variable it names (upper case); raises
    `SettingsError` naming the nearest known one when there is no such setting."""
    name = raw.strip().upper()
    known = sorted(field.upper() for field in Settings.model_fields)
    if name in known:
        return name
    nearest = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    hint = f"; did you mean {nearest[0]}?" if nearest else ""
    raise SettingsError(f"{name} is not a setting{hint}")


def _parse_limits(raw: str) -> tuple[tuple[str, float], ...]:
    limits = []
    for pattern, value in _parse_pairs(raw, "TASK_STUCK_TIMEOUT_BY_TYPE").items():
        try:
            seconds = float(value)
        except ValueError:
            seconds = -1.0
        if not 0 <= seconds < float("inf"):
            raise ValueError(
                f"TASK_STUCK_TIMEOUT_BY_TYPE={raw!r}: {pattern}={value}: expected seconds "
                "(0: never)"
            )
        limits.append((pattern, seconds))
    return tuple(limits)


def _parse_pairs(raw: str, name: str = "RUNPOD_WORKER_ENV") -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in raw.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{name}={raw!r}: expected KEY=VALUE[,KEY=VALUE...]")
        pairs[key.strip()] = value
    return pairs


def dsn_problem(dsn: str) -> str | None:
    """What is wrong with a PostgreSQL URL, or None when it can be used."""
    try:
        parsed = urlparse(dsn)
        port = parsed.port
    except ValueError as exc:
        return f"not a valid URL ({exc})"
    if parsed.scheme not in ("postgres", "postgresql"):
        return f"the scheme must be postgresql://, not {parsed.scheme or 'missing'}"
    if not parsed.hostname and "host=" not in parsed.query:
        return "no host"
    if port is not None and not 0 < port < 65536:
        return f"port {port} is out of range"
    return None


def redact_dsn(dsn: str) -> str:
    """`postgresql://user:secret@host/db` -> `postgresql://user:***@host/db`."""
    scheme, sep, rest = dsn.partition("://")
    if not sep or "@" not in rest:
        return dsn
    creds, _, location = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{location}" if ":" in creds else dsn


def load_settings(**overrides: Any) -> Settings:
    """Reads the environment; raises `SettingsError` with one line per problem."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise SettingsError(_describe(exc)) from None


def _describe(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = [str(part) for part in err.get("loc", ()) if part]
    if not loc:  # a model-level rule; its message already names the variables
        return str(err.get("msg", "")).removeprefix("Value error, ")
    var = loc[0].upper()
    given = err.get("input")
    accepted = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
    if "secret" in str(err.get("type", "")) or var.endswith(("_KEY", "_URL")):
        given = "<hidden>"
    return f"{var}={given!s}: {accepted}"
