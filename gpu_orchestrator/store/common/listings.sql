-- The REST store (Supabase's Data API) cannot migrate: it checks the schema with
-- this function when it starts, and exits with advice when the database is behind.
create or replace function orch_schema_version() returns json
language sql stable as $$
    select coalesce(json_agg(version order by version), '[]'::json) from orchestrator_migrations;
$$;

-- Tasks by status (for the demo and operators; not read by the cycle).
create or replace function orch_task_counts() returns json
language sql stable as $$
    select coalesce(json_object_agg(status, n), '{}'::json)
    from (select status::text as status, count(*) as n from tasks group by 1) c;
$$;

-- For people: recent log lines, optionally of one worker and/or one task.
create or replace function orch_logs(
    worker_id_param text default null, task_id_param text default null, limit_param integer default 100
) returns json
language sql stable as $$
    select coalesce(json_agg(l order by l.timestamp), '[]'::json)
    from (
        select s.timestamp, s.source_type, s.source_id, s.log_level, s.message,
               s.task_id::text as task_id, s.worker_id
        from system_logs s
        where (worker_id_param is null or s.worker_id = worker_id_param)
          and (task_id_param is null or s.task_id::text = task_id_param)
        order by s.timestamp desc
        limit limit_param
    ) l;
$$;

-- For people: workers, newest first.
create or replace function orch_workers(limit_param integer default 50) returns json
language sql stable as $$
    select coalesce(json_agg(w order by w.created_at desc), '[]'::json)
    from (
        select id, status, created_at, ready_at, last_heartbeat, offering, pod_id, cost_per_hr,
               tasks_completed, termination_reason, terminated_at
        from workers order by created_at desc limit limit_param
    ) w;
$$;

-- For people: tasks, newest first, optionally of one status.
create or replace function orch_tasks(
    status_param text default null, limit_param integer default 50
) returns json
language sql stable as $$
    select coalesce(json_agg(t order by t.created_at desc), '[]'::json)
    from (
        select id, task_type, status::text as status, worker_id, attempts, created_at,
               generation_started_at, generation_processed_at, error_message
        from tasks
        where status_param is null or status::text = status_param
        order by created_at desc limit limit_param
    ) t;
$$;
