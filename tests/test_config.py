"""Settings are validated at start: a bad value exits 2 with one line naming the
variable, the value and what is accepted; `config` never shows a secret."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from gpu_orchestrator.config import load_settings, redact_dsn
from gpu_orchestrator.errors import SettingsError

RUNPOD_READY = {
    "runpod_worker_image": "ghcr.io/acme/worker:1",
    "runpod_gpu_types": "NVIDIA A40",
    "database_url": "postgresql://u:pw@db.example/app",
}


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    return subprocess.run(
        [sys.executable, "-m", "gpu_orchestrator", *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("var", "value", "accepted"),
    [
        ("MAX_WORKER_FAILURE_RATE", "1.5", "less than or equal to 1"),
        ("ORCHESTRATOR_POLL_SEC", "-1", "greater than 0"),
        ("MAX_ACTIVE_GPUS", "abc", "valid integer"),
        ("LOG_FORMAT", "xml", "'json' or 'console'"),
        ("RUNPOD_WORKER_ENV", "novalue", "KEY=VALUE"),
        ("FAILURE_WINDOW_MINUTES", "inf", "finite number"),
        ("MAX_WORKER_FAILURE_RATE", "nan", "finite number"),
        ("GPU_IDLE_TIMEOUT_SEC", "-inf", "finite number"),
        ("DEMAND_SQL_FUNCTION", "count(*) from tasks; drop table tasks", "literal arguments"),
        ("DEMAND_SQL_FUNCTION", "f(now())", "literal arguments"),
        ("TASK_STUCK_TIMEOUT_BY_TYPE", "travel_orchestrator=soon", "seconds (0: never)"),
        ("WORKER_KIND", "headless-wan2gp", "SUPABASE_SERVICE_ROLE_KEY"),
    ],
)
def test_bad_value_exits_2_with_one_line_naming_variable_value_and_rule(var, value, accepted):
    result = run_cli("config", **{var: value})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert var in lines[0] and value in lines[0] and accepted in lines[0]


@pytest.mark.parametrize(
    ("given", "nearest"),
    [
        ("MAX_WORKER_FAILURE_RAT=0.9", "MAX_WORKER_FAILURE_RATE"),
        ("failure_window_minute=5", "FAILURE_WINDOW_MINUTES"),
    ],
)
def test_status_what_if_refuses_an_unknown_setting_and_names_the_nearest(given, nearest):
    result = run_cli("status", "--set", given)
    assert result.returncode == 2
    assert given.split("=")[0].upper() in result.stderr and nearest in result.stderr


def test_min_above_max_names_both_variables():
    result = run_cli("config", MIN_ACTIVE_GPUS="5", MAX_ACTIVE_GPUS="2")
    assert result.returncode == 2
    assert "MIN_ACTIVE_GPUS=5" in result.stderr and "MAX_ACTIVE_GPUS (2)" in result.stderr


def test_config_prints_effective_settings_with_secrets_redacted():
    result = run_cli(
        "config",
        DATABASE_URL="postgresql://app:s3cr3t-pw@db.example:5432/app",
        RUNPOD_API_KEY="rp_s3cr3t",
        RUNPOD_WORKER_IMAGE="ghcr.io/acme/worker:1",
        RUNPOD_GPU_TYPES="NVIDIA A40",
        RUNPOD_WORKER_ENV="HF_TOKEN=hf_s3cr3t",
        MAX_ACTIVE_GPUS="7",
    )
    assert result.returncode == 0, result.stderr
    assert "s3cr3t" not in result.stdout + result.stderr
    shown = json.loads(result.stdout)
    assert shown["max_active_gpus"] == 7
    assert shown["database_url"] == "postgresql://app:***@db.example:5432/app"
    assert shown["runpod_worker_env"] == {"HF_TOKEN": "**********"}


def test_secrets_are_absent_from_repr():
    settings = load_settings(
        runpod_api_key="rp-123", **{**RUNPOD_READY, "database_url": "postgresql://u:pw-123@h/db"}
    )
    assert "pw-123" not in repr(settings) and "rp-123" not in repr(settings)


def test_provider_defaults_to_runpod_only_with_an_api_key():
    assert load_settings(runpod_api_key=None).provider_name == "local"
    assert load_settings(runpod_api_key="k", **RUNPOD_READY).provider_name == "runpod"


@pytest.mark.parametrize(
    ("missing", "named"),
    [
        ("runpod_worker_image", "RUNPOD_WORKER_IMAGE"),
        ("runpod_gpu_types", "RUNPOD_GPU_TYPES"),
        ("database_url", "DATABASE_URL"),
    ],
)
def test_runpod_without_what_a_pod_needs_is_refused_at_start(missing, named):
    # set to "nothing" rather than left out, so the test's own environment cannot fill it
    given = {**RUNPOD_READY, missing: "" if missing == "runpod_gpu_types" else None}
    with pytest.raises(SettingsError, match=named):
        load_settings(runpod_api_key="k", **given)


def test_offerings_are_gpu_types_times_data_centers_in_order():
    settings = load_settings(
        runpod_api_key="k",
        **{
            **RUNPOD_READY,
            "runpod_gpu_types": "A40, L40S",
            "runpod_data_center_ids": "EU-RO-1,US-TX-3",
        },
    )
    assert settings.offerings == ("A40@EU-RO-1", "A40@US-TX-3", "L40S@EU-RO-1", "L40S@US-TX-3")


def test_load_settings_raises_settings_error_not_validation_error():
    with pytest.raises(SettingsError, match="TASKS_PER_GPU_THRESHOLD=0"):
        load_settings(tasks_per_gpu_threshold=0)


@pytest.mark.parametrize(
    ("dsn", "shown"),
    [
        ("postgresql://u:pw@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        (
            "postgresql://postgres:@/postgres?host=/tmp/x",
            "postgresql://postgres:***@/postgres?host=/tmp/x",
        ),
    ],
)
def test_redact_dsn_hides_only_the_password(dsn, shown):
    assert redact_dsn(dsn) == shown


def test_config_says_which_store_is_in_use_and_hides_the_supabase_keys():
    result = run_cli(
        "config",
        SUPABASE_URL="https://abc.supabase.co",
        SUPABASE_SERVICE_ROLE_KEY="sb_secret_MARKER_1",
        SUPABASE_WORKER_KEY="sb_worker_MARKER_2",
    )
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert (shown["store"], shown["orchestrator_provider"]) == ("supabase", "local")
    assert "MARKER" not in result.stdout
    half = run_cli("config", SUPABASE_URL="https://abc.supabase.co")
    assert half.returncode == 2 and "SUPABASE_SERVICE_ROLE_KEY" in half.stderr


@pytest.mark.parametrize(
    "dsn",
    ["not-a-url", "postgresql://postgres:s3cr3t@127.0.0.1:abc/x", "mysql://u@h/d"],
)
@pytest.mark.parametrize(
    "command",
    [["run"], ["migrate"], ["once"], ["enqueue"], ["spawn", "--reason", "x"], ["status"]],
)
def test_a_malformed_database_url_is_one_line_and_exit_2_from_every_command(dsn, command):
    result = run_cli(*command, DATABASE_URL=dsn)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpu-orchestrator: DATABASE_URL="), lines
    assert "s3cr3t" not in result.stderr and "Traceback" not in result.stderr


def test_demand_and_per_type_limits_parse_as_documented() -> None:
    settings = load_settings(
        database_url=None,
        demand_sql_function="count_eligible_tasks_service_role(false, 'gpu')",
        task_stuck_timeout_by_type="travel_orchestrator=0,lora_*=14400",
        gpu_task_types="single_image, travel_segment",
    )
    assert settings.demand().params() == (
        ["single_image", "travel_segment"],
        "count_eligible_tasks_service_role(false, 'gpu')",
    )
    policy = settings.policy()
    assert policy.stuck_after_sec("travel_orchestrator") is None
    assert policy.stuck_after_sec("lora_training") == 14400
    assert policy.stuck_after_sec("single_image") == settings.task_stuck_timeout_sec
    # the default spares the app's orchestrator tasks
    assert (
        load_settings(database_url=None).policy().stuck_after_sec("join_clips_orchestrator") is None
    )
