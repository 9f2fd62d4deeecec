-- Every read and write of the orchestrator and of the worker agent is one call
-- to one of these functions, so the asyncpg store (`select fn(...)`) and a REST
-- store (`rpc(fn, ...)`) share them. Worker-facing functions keep the names and
-- parameter names of the system we replace.

-- Older installations define the worker-facing functions with other signatures;
-- `create or replace` would add overloads beside them, so drop every version first.
do $$
declare
    fn regprocedure;
begin
    for fn in
        select p.oid::regprocedure
        from pg_proc p
        join pg_namespace n on n.oid = p.pronamespace
        where n.nspname = current_schema()
          and p.proname in ('func_claim_available_task', 'func_worker_heartbeat_with_logs',
                            'func_mark_task_complete', 'func_mark_task_failed')
    loop
        execute 'drop function ' || fn;
    end loop;
end
$$;

-- A worker-supplied timestamp that does not parse is dropped, not fatal. Stable,
-- not immutable: the text -> timestamptz cast reads TimeZone and accepts 'now'.
create or replace function orch_try_timestamptz(value text) returns timestamptz
language plpgsql stable as $$
begin
    return value::timestamptz;
exception when others then
    return null;
end
$$;

------------------------------------------------------------------------------
-- Worker-facing
------------------------------------------------------------------------------

-- Moves the oldest claimable task to `In Progress` for this worker. Nothing is
-- returned when the queue is empty or the worker may not claim (draining,
-- terminated, in error, unknown).
create function func_claim_available_task(worker_id_param text) returns setof tasks
language plpgsql as $$
begin
    -- plpgsql, not sql: its plan is cached per session instead of re-planned per call.
    return query
    update tasks t
    set status = 'In Progress',
        worker_id = worker_id_param,
        generation_started_at = now(),
        updated_at = now()
    where t.id = (
            select q.id
            from tasks q
            where q.status = 'Queued'
              and q.run_type = 'gpu'
              and exists (select 1 from workers w
                          where w.id = worker_id_param
                            and w.status in ('spawning', 'active', 'external')
                            and w.drain_requested_at is null)
            order by q.created_at, q.id
            limit 1
            for update skip locked)
      and t.status = 'Queued'
    returning t.*;
end
$$;

-- Records a heartbeat. The first one marks the worker ready (`spawning` ->
-- `active`); `status_param = 'crashed'` records a crash; a draining, terminated
-- or failed worker is never turned back into `active`.
create function func_worker_heartbeat_with_logs(
    worker_id_param text,
    vram_total_mb_param integer default null,
    vram_used_mb_param integer default null,
    logs_param jsonb default '[]'::jsonb,
    current_task_id_param text default null,
    status_param text default 'active'
) returns jsonb
language plpgsql as $$
declare
    prev text;
    next text;
    row workers%rowtype;
begin
    select status into prev from workers where id = worker_id_param for update;
    if not found then
        -- Nobody launched it or its row is gone: it must not keep a GPU busy.
        return jsonb_build_object('success', false, 'error', 'unknown worker',
                                  'should_drain', true);
    end if;

    next := case
        when status_param = 'crashed' and prev in ('spawning', 'active', 'terminating') then 'error'
        when prev = 'spawning' then 'active'
        else prev
    end;

    update workers
    set last_heartbeat = now(),
        status = next,
        ready_at = case when next = 'active' then coalesce(ready_at, now()) else ready_at end,
        termination_reason = case when next = 'error' and prev <> 'error'
                                  then 'crashed' else termination_reason end,
        failed_at = case when next = 'error' and prev <> 'error' then now() else failed_at end,
        metadata = coalesce(metadata, '{}'::jsonb) || jsonb_strip_nulls(jsonb_build_object(
            'vram_total_mb', vram_total_mb_param,
            'vram_used_mb', vram_used_mb_param,
            'current_task_id', current_task_id_param))
    where id = worker_id_param
    returning * into row;

    if next <> prev then
        insert into worker_events (worker_id, kind, reason, detail)
        values (worker_id_param, next,
                case next when 'error' then 'crashed' else 'first_heartbeat' end,
                jsonb_build_object('from', prev));
    end if;

    if jsonb_typeof(logs_param) = 'array' then
        insert into system_logs (timestamp, source_type, source_id, log_level, message,
                                 task_id, worker_id, metadata)
        select coalesce(orch_try_timestamptz(l ->> 'timestamp'), now()),
               'worker', worker_id_param,
               left(upper(coalesce(l ->> 'log_level', l ->> 'level', 'INFO')), 16),
               coalesce(l ->> 'message', ''),
               l ->> 'task_id',
               worker_id_param,
               case when jsonb_typeof(l -> 'metadata') = 'object' then l -> 'metadata'
                    else '{}'::jsonb end
        from jsonb_array_elements(logs_param) l
        where jsonb_typeof(l) = 'object';
    end if;

    return jsonb_build_object(
        'success', true,
        'status', row.status,
        'should_drain', row.drain_requested_at is not null
                        or row.status not in ('spawning', 'active', 'external'));
end
$$;

-- Completes a task, only from `In Progress` (and, when given, only for its holder).
create function func_mark_task_complete(
    task_id_param uuid,
    result_data_param jsonb default null,
    worker_id_param text default null
) returns jsonb
language sql as $$
    with done as (
        update tasks
        set status = 'Complete',
            result_data = result_data_param,
            output_location = coalesce(result_data_param ->> 'output_location', output_location),
            generation_processed_at = now(),
            updated_at = now()
        where id = task_id_param
          and status = 'In Progress'
          and (worker_id_param is null or worker_id = worker_id_param)
        returning worker_id
    ), credited as (
        update workers
        set tasks_completed = tasks_completed + 1, last_task_finished_at = now()
        where id in (select worker_id from done)
    )
    select jsonb_build_object('success', exists (select 1 from done));
$$;

-- Releases `In Progress` tasks with `attempts + 1`: back to `Queued` below the
-- limit, `Failed` (dead-lettered) at it. Selects the tasks held by `worker_id_param`
-- (null: held by nobody), optionally only `task_id_param`. When the holder died
-- (`holder_died_param`), it is added to the task's `lost_by`; a task that has
-- now killed `quarantine_after_param` workers is quarantined as poison and those
-- workers' deaths are reclassified as task-caused (neutral for the breaker).
create or replace function orch_release_tasks(
    worker_id_param text,
    task_id_param uuid,
    max_attempts_param integer,
    error_message_param text,
    holder_died_param boolean default false,
    quarantine_after_param integer default 2
) returns jsonb
language plpgsql as $$
declare
    t record;
    lost text[];
    requeued jsonb := '[]'::jsonb;
    failed jsonb := '[]'::jsonb;
    quarantined jsonb := '[]'::jsonb;
begin
    for t in
        select id, attempts, lost_by from tasks
        where status = 'In Progress'
          and worker_id is not distinct from worker_id_param
          and (task_id_param is null or id = task_id_param)
        for update
    loop
        lost := case when holder_died_param and worker_id_param is not null
                     then t.lost_by || worker_id_param else t.lost_by end;
        if holder_died_param and cardinality(lost) >= quarantine_after_param then
            update tasks
            set status = 'Failed', attempts = attempts + 1, lost_by = lost,
                quarantined_at = now(), generation_processed_at = now(), updated_at = now(),
                error_message = format('quarantined: in progress on %s workers that died (%s)',
                                       cardinality(lost), array_to_string(lost, ', '))
            where id = t.id;
            update workers set task_caused = true where id = any (lost);
            insert into worker_events (worker_id, kind, reason, detail)
            select w, 'reclassified', 'task_caused', jsonb_build_object('task_id', t.id)
            from unnest(lost) w;
            quarantined := quarantined || to_jsonb(t.id);
        elsif t.attempts + 1 >= max_attempts_param then
            update tasks
            set status = 'Failed', attempts = attempts + 1, lost_by = lost,
                error_message = error_message_param,
                generation_processed_at = now(), updated_at = now()
            where id = t.id;
            failed := failed || to_jsonb(t.id);
        else
            update tasks
            set status = 'Queued', attempts = attempts + 1, lost_by = lost,
                error_message = error_message_param,
                worker_id = null, generation_started_at = null, updated_at = now()
            where id = t.id;
            requeued := requeued || to_jsonb(t.id);
        end if;
    end loop;
    if found then
        update workers set last_task_finished_at = now() where id = worker_id_param;
    end if;
    return jsonb_build_object('requeued', requeued, 'failed', failed,
                              'quarantined', quarantined);
end
$$;

-- A task failed on its worker: `attempts + 1`, requeued below the limit.
create function func_mark_task_failed(
    task_id_param uuid,
    error_message_param text,
    worker_id_param text default null,
    max_attempts_param integer default 3
) returns jsonb
language plpgsql as $$
declare
    holder text;
    released jsonb;
begin
    select worker_id into holder from tasks
    where id = task_id_param and status = 'In Progress'
      and (worker_id_param is null or worker_id = worker_id_param)
    for update;
    if not found then
        return jsonb_build_object('success', false);
    end if;
    released := orch_release_tasks(holder, task_id_param, max_attempts_param,
                                   left(error_message_param, 4000));
    return jsonb_build_object('success', true,
                              'requeued', jsonb_array_length(released -> 'requeued') > 0);
end
$$;

------------------------------------------------------------------------------
-- Orchestrator-facing
------------------------------------------------------------------------------

-- Everything one cycle needs, in one round trip whatever the fleet size.
-- `workers`: rows the cycle may act on (not yet released, or `external`) and rows
-- launched, failed or ready within `horizon_sec_param` (the breaker's history),
-- each a positional array (see store/snapshot.py) with times as epoch seconds:
-- compact, and cheap to decode. `queued` stops counting at `queue_cap_param`
-- (null: exact): past the cap the plan is the same, and counting a deep queue
-- costs a scan of it. plpgsql so that plans are cached per session.
create or replace function orch_snapshot(
    horizon_sec_param double precision default 1800,
    queue_cap_param integer default null
) returns json
language plpgsql stable as $$
declare
    since constant timestamptz := now() - make_interval(secs => horizon_sec_param);
begin
    return json_build_object(
        'now', extract(epoch from now()),
        'workers', coalesce((
            select json_agg(json_build_array(
                w.id, w.status, extract(epoch from w.created_at),
                extract(epoch from w.ready_at), extract(epoch from w.last_heartbeat),
                extract(epoch from w.drain_requested_at), extract(epoch from w.terminated_at),
                extract(epoch from w.last_task_finished_at), w.tasks_completed, w.pod_id,
                w.termination_reason, w.offering, w.probe, extract(epoch from w.failed_at),
                w.task_caused, w.cost_per_hr))
            from workers w
            where (w.terminated_at is null
                   and w.status in ('spawning', 'active', 'terminating', 'error', 'external'))
               or w.created_at > since or w.failed_at > since or w.ready_at > since),
            '[]'::json),
        'holds', coalesce((
            select json_agg(json_build_array(
                t.id, t.worker_id, extract(epoch from t.generation_started_at), t.attempts))
            from tasks t
            where t.status = 'In Progress'), '[]'::json),
        'queued', (
            select count(*) from (
                select from tasks q
                where q.status = 'Queued' and q.run_type = 'gpu'
                limit queue_cap_param) c),
        -- task outcomes within the horizon, for the task failure rate alert
        'finished', (
            select json_build_array(count(*) filter (where t.status = 'Complete'),
                                    count(*) filter (where t.status = 'Failed'))
            from tasks t
            where t.status in ('Complete', 'Failed') and t.generation_processed_at > since),
        'oldest_queued_at', (
            select extract(epoch from q.created_at) from tasks q
            where q.status = 'Queued' and q.run_type = 'gpu'
            order by q.created_at, q.id limit 1),
        'breaker', (
            select json_build_object(
                'state', case e.kind when 'breaker_opened' then 'open' else 'closed' end,
                'at', extract(epoch from e.at), 'reason', e.reason,
                'probe_interval_sec', (e.detail ->> 'probe_interval_sec')::double precision)
            from orchestrator_events e
            where e.kind in ('breaker_opened', 'breaker_closed')
            order by e.at desc, e.id desc
            limit 1),
        'controls', json_build_object(
            'spawning_paused', coalesce((
                select e.kind = 'spawning_paused' from orchestrator_events e
                where e.kind in ('spawning_paused', 'spawning_resumed')
                order by e.at desc, e.id desc limit 1), false),
            'kill_switch', coalesce((
                select e.kind = 'kill_switch_on' from orchestrator_events e
                where e.kind in ('kill_switch_on', 'kill_switch_off')
                order by e.at desc, e.id desc limit 1), false),
            'breaker_reset_at', (
                select extract(epoch from max(e.at)) from orchestrator_events e
                where e.kind = 'breaker_reset')));
end
$$;

-- Appends an orchestrator-level event (breaker transition or operator lever).
create or replace function orch_record_event(
    kind_param text, actor_param text, reason_param text, detail_param jsonb default '{}'::jsonb
) returns json
language sql as $$
    insert into orchestrator_events (kind, actor, reason, detail)
    values (kind_param, actor_param, reason_param, detail_param)
    returning json_build_object('id', id, 'at', at, 'kind', kind);
$$;

-- The intent row, written before the provider is asked for a pod.
create or replace function orch_create_worker(
    worker_id_param text, provider_param text, detail_param jsonb
) returns void
language sql as $$
    insert into workers (id, status, provider, offering, probe, metadata)
    values (worker_id_param, 'spawning', provider_param, detail_param ->> 'offering',
            coalesce((detail_param ->> 'probe')::boolean, false), detail_param);
    insert into worker_events (worker_id, kind, reason, detail)
    values (worker_id_param, 'spawning', detail_param ->> 'reason', detail_param);
$$;

create or replace function orch_record_pod(
    worker_id_param text, pod_id_param text, cost_per_hr_param numeric
) returns void
language sql as $$
    update workers set pod_id = pod_id_param, cost_per_hr = cost_per_hr_param
    where id = worker_id_param;
    insert into worker_events (worker_id, kind, reason, detail)
    values (worker_id_param, 'pod_created', null,
            jsonb_build_object('pod_id', pod_id_param, 'cost_per_hr', cost_per_hr_param));
$$;

-- Compare-and-set of a worker's status, with its event in the same statement.
-- Returns false when the row was not in one of `from_param` (someone moved first).
-- `released_param` says the pod is already known gone (nothing left to terminate).
create or replace function orch_transition_worker(
    worker_id_param text,
    from_param text[],
    to_param text,
    reason_param text,
    detail_param jsonb default '{}'::jsonb,
    released_param boolean default false
) returns boolean
language sql as $$
    with moved as (
        update workers
        set status = to_param,
            drain_requested_at = case when to_param = 'terminating'
                                      then coalesce(drain_requested_at, now())
                                      else drain_requested_at end,
            terminated_at = case when released_param or to_param = 'terminated'
                                 then coalesce(terminated_at, now())
                                 else terminated_at end,
            termination_reason = case when to_param in ('error', 'terminated')
                                      then reason_param else termination_reason end,
            failed_at = case when to_param = 'error' then coalesce(failed_at, now())
                             else failed_at end
        where id = worker_id_param and status = any (from_param)
        returning id
    ), event as (
        insert into worker_events (worker_id, kind, reason, detail)
        select id, to_param, reason_param, detail_param from moved
    )
    select exists (select 1 from moved);
$$;

-- The pod of a failed worker is confirmed gone.
create or replace function orch_mark_released(worker_id_param text) returns void
language sql as $$
    with released as (
        update workers set terminated_at = now()
        where id = worker_id_param and terminated_at is null
        returning id
    )
    insert into worker_events (worker_id, kind, reason)
    select id, 'released', null from released;
$$;

-- Leader lease: taken when free or expired, renewed by its holder. `epoch` grows
-- each time the lease changes hands (a fencing token).
create or replace function orch_acquire_lease(
    name_param text, holder_param text, ttl_sec_param double precision
) returns json
language plpgsql as $$
declare
    lease orchestrator_leases%rowtype;
begin
    insert into orchestrator_leases as l (name, holder, epoch, expires_at)
    values (name_param, holder_param, 1, now() + make_interval(secs => ttl_sec_param))
    on conflict (name) do update
        set holder = excluded.holder,
            epoch = case when l.holder = excluded.holder then l.epoch else l.epoch + 1 end,
            acquired_at = case when l.holder = excluded.holder then l.acquired_at else now() end,
            expires_at = excluded.expires_at
        where l.holder = excluded.holder or l.expires_at < now()
    returning * into lease;
    if not found then
        select * into lease from orchestrator_leases where name = name_param;
    end if;
    return json_build_object('leader', lease.holder = holder_param, 'holder', lease.holder,
                             'epoch', lease.epoch, 'expires_at', lease.expires_at);
end
$$;

create or replace function orch_release_lease(name_param text, holder_param text) returns void
language sql as $$
    update orchestrator_leases set expires_at = now()
    where name = name_param and holder = holder_param;
$$;

-- Adds tasks: `[{"task_type": ..., "params": {...}}, ...]`. Returns how many.
create or replace function orch_enqueue_tasks(tasks_param jsonb) returns integer
language sql as $$
    with added as (
        insert into tasks (task_type, params)
        select coalesce(t ->> 'task_type', 'default'), coalesce(t -> 'params', '{}'::jsonb)
        from jsonb_array_elements(tasks_param) t
        returning 1
    )
    select count(*)::integer from added;
$$;

-- Retention for `system_logs`; returns how many lines were deleted.
create or replace function orch_prune_system_logs(older_than_param interval) returns integer
language sql as $$
    with gone as (
        delete from system_logs where timestamp < now() - older_than_param returning 1
    )
    select count(*)::integer from gone;
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
