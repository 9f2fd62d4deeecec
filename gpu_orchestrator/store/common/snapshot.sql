-- Everything one cycle needs, in one round trip whatever the fleet size, in the
-- shape the policy reads it: each row of `workers`, `launches` and `holds` is one
-- `WorkerView`, `Launch` or `TaskHold` (models.py), its fields in their order, so
-- that store/snapshot.py decodes the document straight into them:
-- - workers: not released and in a status the cycle manages (it may act on them);
-- - launches: the breaker's history: live (its pod may still run), or launched,
--   failed or ready within `horizon_sec_param`.
-- (Status before `terminated_at`: on an adopted database both are computed per
-- row by a view, and the status rules out most ended rows at less cost.)
-- Times are float8 epoch seconds (`date_part` answers float8 directly).
-- `queued` stops counting at `queue_cap_param` (null: exact): past the cap the
-- plan is the same, and counting a deep queue costs a scan of it. Demand is the
-- queued tasks of `run_type` 'gpu' (the conditions of the partial index
-- `tasks_queued_idx`: keep them plain), only of the types in
-- `gpu_task_types_param` when given (`GPU_TASK_TYPES`); or, with `demand_sql_param`
-- (`DEMAND_SQL_FUNCTION`, e.g. the app's count of the tasks it would hand out),
-- that function's answer. plpgsql so that plans are cached per session.
create or replace function orch_snapshot(
    horizon_sec_param double precision default 1800,
    queue_cap_param integer default null,
    gpu_task_types_param text[] default null,
    demand_sql_param text default null
) returns json
language plpgsql stable as $$
declare
    since constant timestamptz := now() - make_interval(secs => horizon_sec_param);
    lim constant integer := orch_task_attempts_limit(null);
    served constant bigint := coalesce((
        select max((e.detail ->> 'up_to_id')::bigint) from orchestrator_events e
        where e.kind = 'spawn_requests_served'), 0);
    -- what `demand_sql_param` may pass: booleans, null, integers, plain quoted words
    literal constant text := '(true|false|null|-?[0-9]+|''[A-Za-z0-9_ -]*'')';
    demand bigint;
    ours text;
begin
    if demand_sql_param is not null then
        -- only a call with plain literal arguments: never arbitrary SQL
        if demand_sql_param !~ ('^[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)?\(\s*(' || literal
                                || '(\s*,\s*' || literal || ')*)?\s*\)$') then
            raise exception 'DEMAND_SQL_FUNCTION=%: not a function call with literal arguments',
                demand_sql_param using errcode = '22023';
        end if;
        -- the app's function, run where the app runs it: its names resolve in `public`
        ours := current_setting('search_path');
        perform set_config('search_path', 'public, pg_catalog', true);
        execute format('select (%s)::bigint', demand_sql_param) into demand;
        perform set_config('search_path', ours, true);
    end if;
    return json_build_object(
        'now', date_part('epoch', now()),
        'workers', coalesce((
            select json_agg(json_build_array(
                w.id, w.status, date_part('epoch', w.created_at), date_part('epoch', w.ready_at),
                date_part('epoch', w.last_heartbeat), date_part('epoch', w.drain_requested_at),
                date_part('epoch', w.terminated_at), date_part('epoch', w.last_task_finished_at),
                w.tasks_completed, w.pod_id, w.termination_reason, w.cost_per_hr,
                date_part('epoch', w.pod_missing_since)))
            from workers w
            where w.status in ('spawning', 'active', 'terminating', 'error', 'external')
              and w.terminated_at is null),
            '[]'::json),
        'launches', coalesce((
            select json_agg(json_build_array(
                w.id, date_part('epoch', w.created_at), w.offering, w.probe, w.pod_id is not null,
                r.live, date_part('epoch', w.ready_at), date_part('epoch', w.failed_at),
                case when w.status = 'error' then w.termination_reason end, w.task_caused,
                w.tasks_completed, w.fingerprint))
            from workers w,
                 lateral (select w.status in ('spawning', 'active', 'terminating')
                                 and w.terminated_at is null as live) r
            where r.live or w.created_at > since or w.failed_at > since or w.ready_at > since),
            '[]'::json),
        'holds', coalesce((
            select json_agg(json_build_array(
                t.id, t.worker_id, date_part('epoch', t.generation_started_at), t.attempts,
                t.task_type))
            from tasks t
            where t.status = 'In Progress'), '[]'::json),
        'queued', coalesce(demand, (
            select count(*) from (
                select from tasks q
                where q.status = 'Queued' and q.run_type = 'gpu' and q.attempts < lim
                  and (gpu_task_types_param is null or q.task_type = any (gpu_task_types_param))
                limit queue_cap_param) c)),
        -- task outcomes within the horizon, for the task failure rate alert, of tasks
        -- created within the last day: on an adopted database, whose `tasks` has no
        -- index on `generation_processed_at`, the app's (status, created_at) index
        -- then bounds the scan (without it: every finished task, every cycle)
        'finished', (
            select json_build_array(count(*) filter (where t.status = 'Complete'),
                                    count(*) filter (where t.status = 'Failed'))
            from tasks t
            where t.status in ('Complete', 'Failed') and t.generation_processed_at > since
              and t.created_at > since - interval '1 day'),
        'oldest_queued_at', (
            select date_part('epoch', q.created_at) from tasks q
            where q.status = 'Queued' and q.run_type = 'gpu' and q.attempts < lim
              and (gpu_task_types_param is null or q.task_type = any (gpu_task_types_param))
            order by q.created_at, q.id limit 1),
        'breaker', (
            select json_build_object(
                'state', case e.kind when 'breaker_opened' then 'open' else 'closed' end,
                'at', date_part('epoch', e.at), 'reason', e.reason,
                'probe_interval_sec', (e.detail ->> 'probe_interval_sec')::double precision)
            from orchestrator_events e
            where e.kind in ('breaker_opened', 'breaker_closed')
            order by e.at desc, e.id desc
            limit 1),
        -- a Headless-Wan2GP / Reigh database we adopted (see store/migrate.py)
        'adopted', exists (select 1 from orchestrator_events e where e.kind = 'adopted'),
        -- the end of the latest spell during which nobody could read the database
        'blind_until', (
            select date_part('epoch', max(e.at)) from orchestrator_events e
            where e.kind = 'observation_gap'),
        'controls', json_build_object(
            'spawning_paused', coalesce((
                select e.kind = 'spawning_paused' from orchestrator_events e
                where e.kind in ('spawning_paused', 'spawning_resumed')
                order by e.at desc, e.id desc limit 1), false),
            'kill_switch', coalesce((
                select e.kind = 'kill_switch_on' from orchestrator_events e
                where e.kind in ('kill_switch_on', 'kill_switch_off')
                order by e.at desc, e.id desc limit 1), false),
            -- an operator's reset, or the adoption of a legacy database: failures
            -- before it are forgiven
            'breaker_reset_at', (
                select date_part('epoch', max(e.at)) from orchestrator_events e
                where e.kind in ('breaker_reset', 'adopted')),
            -- operator `spawn` requests not yet served by a leader: how many, up to which id
            'requested_spawns', (
                select coalesce(sum((e.detail ->> 'count')::integer), 0)
                from orchestrator_events e
                where e.kind = 'spawn_requested' and e.id > served),
            'spawn_request_id', (
                select max(e.id) from orchestrator_events e
                where e.kind = 'spawn_requested' and e.id > served)));
end
$$;

