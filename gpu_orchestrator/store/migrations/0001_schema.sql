-- Tables of the queue and the fleet. Applies to an empty database and to an
-- existing Headless-Wan2GP database alike: nothing is dropped or rewritten, and
-- status columns are compared with string literals so both `text` and the
-- `task_status` enum work.

create table if not exists tasks (
    id uuid primary key default gen_random_uuid(),
    task_type text not null default 'default',
    params jsonb not null default '{}'::jsonb,
    status text not null default 'Queued',
    worker_id text,
    attempts integer not null default 0,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    generation_started_at timestamptz,
    generation_processed_at timestamptz,
    error_message text,
    result_data jsonb,
    output_location text
);
alter table tasks add column if not exists worker_id text;
alter table tasks add column if not exists attempts integer not null default 0;
alter table tasks add column if not exists updated_at timestamptz not null default now();
alter table tasks add column if not exists generation_started_at timestamptz;
alter table tasks add column if not exists generation_processed_at timestamptz;
alter table tasks add column if not exists error_message text;
alter table tasks add column if not exists result_data jsonb;
alter table tasks add column if not exists output_location text;
-- Only `gpu` tasks are claimed by GPU workers and counted as demand.
alter table tasks add column if not exists run_type text not null default 'gpu';
-- Workers that died holding this task; at two it is quarantined as poison.
alter table tasks add column if not exists lost_by text[] not null default '{}';
alter table tasks add column if not exists quarantined_at timestamptz;

create index if not exists tasks_queued_idx on tasks (created_at, id)
    where status = 'Queued' and run_type = 'gpu';
create index if not exists tasks_in_progress_idx on tasks (worker_id)
    where status = 'In Progress';
create index if not exists tasks_finished_idx on tasks (generation_processed_at)
    where status in ('Complete', 'Failed');

create table if not exists workers (
    id text primary key,
    status text not null default 'spawning',
    last_heartbeat timestamptz,
    metadata jsonb not null default '{}'::jsonb,
    created_at timestamptz not null default now()
);
alter table workers add column if not exists metadata jsonb not null default '{}'::jsonb;
alter table workers add column if not exists last_heartbeat timestamptz;
alter table workers add column if not exists provider text;
alter table workers add column if not exists pod_id text;
alter table workers add column if not exists cost_per_hr numeric;
alter table workers add column if not exists ready_at timestamptz;
alter table workers add column if not exists drain_requested_at timestamptz;
alter table workers add column if not exists terminated_at timestamptz;
alter table workers add column if not exists termination_reason text;
alter table workers add column if not exists last_task_finished_at timestamptz;
alter table workers add column if not exists tasks_completed integer not null default 0;
alter table workers add column if not exists offering text;
alter table workers add column if not exists probe boolean not null default false;
alter table workers add column if not exists failed_at timestamptz;
-- Its death was caused by a poison task: neutral for the breaker.
alter table workers add column if not exists task_caused boolean not null default false;

-- The snapshot reads live rows and `error` rows whose pod is not released yet.
create index if not exists workers_unreleased_idx on workers (id)
    where terminated_at is null;
-- The breaker reads workers launched, failed or ready within its horizon.
create index if not exists workers_created_idx on workers (created_at);
create index if not exists workers_failed_idx on workers (failed_at);
create index if not exists workers_ready_idx on workers (ready_at);

create table if not exists system_logs (
    id bigserial primary key,
    timestamp timestamptz not null default now(),
    source_type text not null,
    source_id text,
    log_level text not null default 'INFO',
    message text not null,
    task_id text,
    worker_id text,
    cycle_number integer,
    metadata jsonb not null default '{}'::jsonb
);
create index if not exists system_logs_timestamp_idx on system_logs (timestamp);
create index if not exists system_logs_worker_idx on system_logs (worker_id, timestamp);
