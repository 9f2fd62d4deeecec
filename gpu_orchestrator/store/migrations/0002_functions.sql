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
