-- Adopting a live Headless-Wan2GP / Reigh database (issue 11). Runs with
-- `search_path = orchestrator`: unqualified names are ours, the app's are always
-- written `public.x`. Nothing of the app's is dropped, altered or re-granted, with
-- one exception, made in place and recorded: the heartbeat the worker calls is
-- extended (same signature, result, attributes and grants; its old body still
-- runs first, unchanged), see the end of this file.
--
-- The app's rows stay the app's: the adapter below (views `workers`, `tasks`,
-- `system_logs` in our shape) reads them; what only we know of a worker or a task
-- lives beside them in `worker_state` and `task_state`; our writes to the app's
-- rows keep to the values its constraints allow (a worker's status is `active`,
-- `inactive` or `terminated`, with the finer state in `metadata.orchestrator_status`
-- as the old orchestrator wrote it).

-- What only we know of a worker: every row we launched (`launched`), and legacy
-- rows once we acted on them. `status` is ours (spawning ... terminated, error).
create table worker_state (
    worker_id text primary key,
    launched boolean not null default false,
    status text not null,
    provider text,
    offering text,
    probe boolean not null default false,
    fingerprint text,
    pod_id text,
    cost_per_hr numeric,
    ready_at timestamptz,
    drain_requested_at timestamptz,
    terminated_at timestamptz,
    termination_reason text,
    failed_at timestamptz,
    task_caused boolean not null default false,
    pod_missing_since timestamptz,
    last_task_finished_at timestamptz,
    tasks_completed integer not null default 0
);

-- What only we know of a task: the workers that died holding it (poison rule).
create table task_state (
    task_id uuid primary key,
    lost_by text[] not null default '{}',
    quarantined_at timestamptz
);

-- (The helpers the views call name what they read with its schema: a view may be
-- read from any search_path.)

-- The adoption time: legacy rows that had ended by then neither bill nor count.
create function orch_adopted_at() returns timestamptz
language sql stable as $$
    select min(at) from orchestrator.orchestrator_events where kind = 'adopted';
$$;

-- A legacy row runs on a pod when the old orchestrator recorded one, or when its
-- id is a pod name of the old orchestrator (`gpu-YYYYMMDD_HHMMSS-xxxxxxxx`: the
-- pod is found by name while it boots). Anything else (API workers, `external`
-- rows the heartbeat inserted, workstations) has no pod: never failed for a
-- missing pod, never billed, never terminated.
create function orch_legacy_has_pod(id text, instance_type text, metadata jsonb) returns boolean
language sql immutable as $$
    select instance_type is distinct from 'external'
       and (metadata ->> 'runpod_id' is not null
            or id ~ '^gpu-[0-9]{8}_[0-9]{6}-[0-9a-f]{8}$');
$$;

-- A legacy row's status in our terms (rows we never touched).
create function orch_legacy_status(id text, instance_type text, status text, metadata jsonb)
returns text
language sql immutable as $$
    select case
        when not orchestrator.orch_legacy_has_pod(id, instance_type, metadata) then 'external'
        when status in ('active', 'spawning') then status
        when status = 'inactive' and metadata ->> 'orchestrator_status' in ('spawning', 'active')
            then 'spawning'
        when status in ('crashed', 'error') or metadata ->> 'orchestrator_status' = 'error'
            then 'error'
        else 'terminated'
    end;
$$;

-- The app's workers in our shape. A legacy `error` row that had ended before the
-- adoption is released (not billed, not acted on); a `crashed` one is handled like
-- a crash (its pod, if any, is terminated and its tasks requeued) but, like every
-- failure from before we ran, never counts for the breaker.
create view workers as
select w.id,
       coalesce(s.status, l.status) as status,
       w.created_at,
       coalesce(s.ready_at, case when l.status = 'active'
           then coalesce(orch_try_timestamptz(w.metadata ->> 'promoted_to_active_at'),
                         w.created_at) end) as ready_at,
       w.last_heartbeat,
       s.drain_requested_at,
       coalesce(s.terminated_at, case
           when s.status is null and (l.status = 'terminated'
                or (l.status = 'error' and w.status <> 'crashed'
                    and coalesce(w.last_heartbeat, w.created_at) < orch_adopted_at()))
           then coalesce(orch_try_timestamptz(w.metadata ->> 'terminated_at'),
                         orch_adopted_at(), w.created_at) end) as terminated_at,
       coalesce(s.termination_reason, case
           when l.status = 'error' and w.status = 'crashed' then 'crashed'
           when l.status = 'error' then 'unknown' end) as termination_reason,
       coalesce(s.last_task_finished_at, (
           select max(t.generation_processed_at) from public.tasks t
           where t.worker_id = w.id and t.status in ('Complete', 'Failed'))) as last_task_finished_at,
       coalesce(s.tasks_completed, 0) + (
           select count(*)::integer from (
               select from public.tasks t
               where t.worker_id = w.id and t.status = 'Complete' limit 100) c) as tasks_completed,
       coalesce(s.pod_id, w.metadata ->> 'runpod_id') as pod_id,
       coalesce(s.offering, w.instance_type) as offering,
       coalesce(s.probe, false) as probe,
       s.failed_at,
       coalesce(s.task_caused, false) as task_caused,
       s.cost_per_hr,
       s.pod_missing_since,
       s.fingerprint,
       coalesce(s.provider, case when l.status <> 'external' then 'runpod' end) as provider,
       coalesce(w.metadata, '{}'::jsonb) as metadata,
       s.launched is true as launched
from public.workers w
left join worker_state s on s.worker_id = w.id
cross join lateral (select orch_legacy_status(w.id, w.instance_type, w.status, w.metadata)
                    as status) l;

-- The app's tasks in our shape: `run_type` from the app's `task_types` where it
-- has one (unknown types are GPU work, as in the app). `status` stays the app's
-- enum: compared with a literal it keeps the app's indexes on it usable.
do $$
begin
    execute format($view$
        create view tasks as
        select t.id, t.task_type, t.params, t.status, t.worker_id, t.attempts,
               t.created_at, coalesce(t.updated_at, t.created_at) as updated_at,
               t.generation_started_at, t.generation_processed_at, t.error_message,
               t.result_data, t.output_location, %s as run_type,
               coalesce(x.lost_by, '{}') as lost_by, x.quarantined_at
        from public.tasks t
        left join task_state x on x.task_id = t.id
        $view$,
        case when to_regclass('public.task_types') is not null
             then '(select coalesce(max(tt.run_type), ''gpu'') from public.task_types tt '
                  'where tt.name = t.task_type)'
             else '''gpu''' end);
end
$$;

create view system_logs as
select l.timestamp, l.source_type, l.source_id, l.log_level, l.message,
       l.task_id::text as task_id, l.worker_id
from public.system_logs l;

------------------------------------------------------------------------------
-- Writes. Every orchestrator function keeps the native signature (the store calls
-- both layouts alike) and its fencing (`orch_check_lease`).
------------------------------------------------------------------------------

-- Our status mirrored into the app's row, as the old orchestrator wrote it.
create function orch_legacy_row_status(status text) returns text
language sql immutable as $$
    select case status
        when 'active' then 'active'
        when 'terminating' then 'active'
        when 'terminated' then 'terminated'
        else 'inactive'  -- spawning, error
    end;
$$;

create function orch_mirror_status(worker_id_param text, status_param text, detail_param jsonb)
returns void
language sql as $$
    update public.workers
    set status = orch_legacy_row_status(status_param),
        metadata = coalesce(metadata, '{}'::jsonb)
                   || jsonb_build_object('orchestrator_status', status_param)
                   || detail_param
    where id = worker_id_param;
$$;

-- The intent row: the app's row (with the NOT NULL `instance_type`) and ours.
create function orch_create_worker(
    lease_name_param text, lease_epoch_param bigint,
    worker_id_param text, provider_param text, detail_param jsonb
) returns void
language plpgsql as $$
begin
    perform orch_check_lease(lease_name_param, lease_epoch_param);
    insert into public.workers (id, instance_type, status, metadata)
    values (worker_id_param, coalesce(detail_param ->> 'offering', provider_param), 'inactive',
            jsonb_build_object('orchestrator_status', 'spawning',
                               'launched_by', 'gpu-orchestrator'));
    insert into worker_state (worker_id, launched, status, provider, offering, probe, fingerprint)
    values (worker_id_param, true, 'spawning', provider_param, detail_param ->> 'offering',
            coalesce((detail_param ->> 'probe')::boolean, false), detail_param ->> 'fingerprint');
    insert into worker_events (worker_id, kind, reason, detail)
    values (worker_id_param, 'spawning', detail_param ->> 'reason', detail_param);
end
$$;

-- A legacy row we act on for the first time gets its state row, from what the
-- adapter reads of it now.
create function orch_own_worker(worker_id_param text) returns void
language sql as $$
    insert into worker_state (worker_id, status, pod_id, ready_at, offering, provider)
    select w.id, w.status, w.pod_id, w.ready_at, w.offering, w.provider
    from workers w where w.id = worker_id_param
    on conflict (worker_id) do nothing;
$$;

create function orch_record_pod(
    lease_name_param text, lease_epoch_param bigint,
    worker_id_param text, pod_id_param text, cost_per_hr_param numeric,
    adopted_param boolean default false
) returns boolean
language plpgsql as $$
begin
    perform orch_check_lease(lease_name_param, lease_epoch_param);
    perform orch_own_worker(worker_id_param);
    update worker_state set pod_id = pod_id_param, cost_per_hr = cost_per_hr_param
    where worker_id = worker_id_param and (pod_id is null or pod_id = pod_id_param);
    if not found then
        return false;
    end if;
    update public.workers
    set metadata = coalesce(metadata, '{}'::jsonb) || jsonb_build_object('runpod_id', pod_id_param)
    where id = worker_id_param;
    insert into worker_events (worker_id, kind, reason, detail)
    values (worker_id_param, case when adopted_param then 'pod_adopted' else 'pod_created' end,
            null, jsonb_build_object('pod_id', pod_id_param, 'cost_per_hr', cost_per_hr_param));
    return true;
end
$$;

create function orch_record_pod_sightings(
    lease_name_param text, lease_epoch_param bigint, missing_param text[], seen_param text[]
) returns void
language plpgsql as $$
begin
    perform orch_check_lease(lease_name_param, lease_epoch_param);
    perform orch_own_worker(m) from unnest(missing_param) m;
    update worker_state set pod_missing_since = coalesce(pod_missing_since, now())
    where worker_id = any (missing_param);
    update worker_state set pod_missing_since = null
    where worker_id = any (seen_param) and pod_missing_since is not null;
end
$$;

-- Compare-and-set of a worker's status on what the plan observed (as natively):
-- the app's row is locked first, which orders this against a heartbeat.
create function orch_transition_worker(
    lease_name_param text,
    lease_epoch_param bigint,
    worker_id_param text,
    from_param text[],
    to_param text,
    reason_param text,
    detail_param jsonb default '{}'::jsonb,
    released_param boolean default false,
    check_heartbeat_param boolean default false,
    heartbeat_seen_param timestamptz default null,
    require_idle_param boolean default false
) returns boolean
language plpgsql as $$
declare
    prev record;
begin
    perform orch_check_lease(lease_name_param, lease_epoch_param);
    perform 1 from public.workers where id = worker_id_param for update;
    if not found then
        return false;
    end if;
    select * into prev from workers where id = worker_id_param;
    if prev.status <> all (from_param) then
        return false;
    end if;
    -- The plan's heartbeat time went through a float: a millisecond of slack.
    if check_heartbeat_param and prev.last_heartbeat is not null
       and (heartbeat_seen_param is null
            or prev.last_heartbeat > heartbeat_seen_param + interval '1 millisecond') then
        return false;
    end if;
    if require_idle_param and exists (
        select 1 from public.tasks t
        where t.worker_id = worker_id_param and t.status = 'In Progress'
    ) then
        return false;
    end if;
    perform orch_own_worker(worker_id_param);
    update worker_state
    set status = to_param,
        drain_requested_at = case when to_param = 'terminating'
                                  then coalesce(drain_requested_at, now())
                                  else drain_requested_at end,
        terminated_at = case when released_param or to_param = 'terminated'
                             then coalesce(terminated_at, now())
                             else terminated_at end,
        termination_reason = case when to_param in ('error', 'terminated')
                                  then reason_param else termination_reason end,
        -- a legacy worker last heard of before the adoption died then: its failure
        -- is forgiven with the rest (it neither counts nor ends a probation)
        failed_at = case when to_param <> 'error' then failed_at
                         when not prev.launched
                              and coalesce(prev.last_heartbeat, prev.created_at) < orch_adopted_at()
                         then coalesce(failed_at, prev.last_heartbeat, prev.created_at)
                         else coalesce(failed_at, now()) end
    where worker_id = worker_id_param;
    perform orch_mirror_status(worker_id_param, to_param, case
        when to_param = 'error' then jsonb_build_object('error_reason', reason_param,
                                                       'error_time', now())
        when to_param = 'terminated' then jsonb_build_object('terminated_at', now())
        else '{}'::jsonb end);
    insert into worker_events (worker_id, kind, reason, detail)
    values (worker_id_param, to_param, reason_param, detail_param);
    return true;
end
$$;

-- The pod of a failed worker is confirmed gone.
create function orch_mark_released(
    lease_name_param text, lease_epoch_param bigint, worker_id_param text
) returns void
language plpgsql as $$
begin
    perform orch_check_lease(lease_name_param, lease_epoch_param);
    perform orch_own_worker(worker_id_param);
    update worker_state set terminated_at = now()
    where worker_id = worker_id_param and terminated_at is null;
    if found then
        update public.workers
        set status = 'terminated',
            metadata = coalesce(metadata, '{}'::jsonb) || jsonb_build_object('terminated_at', now())
        where id = worker_id_param;
        insert into worker_events (worker_id, kind, reason) values (worker_id_param, 'released', null);
    end if;
end
$$;

-- Releases `In Progress` tasks as natively (`attempts + 1`: requeued below the
-- limit, failed at it; poison quarantined while the platform is fine), writing the
-- app's rows the way its own system functions pass its timing trigger
-- (`prevent_timing_manipulation` lets `application_name` 'claim_task' through).
create function orch_release_tasks(
    lease_name_param text,
    lease_epoch_param bigint,
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
    lim constant integer := orch_task_attempts_limit(max_attempts_param);
    caller constant text := current_setting('application_name');
begin
    perform orch_check_lease(lease_name_param, lease_epoch_param);
    perform set_config('application_name', 'claim_task', true);
    for t in
        select p.id, p.attempts, coalesce(x.lost_by, '{}') as lost_by
        from public.tasks p left join task_state x on x.task_id = p.id
        where p.status = 'In Progress'
          and p.worker_id is not distinct from worker_id_param
          and (task_id_param is null or p.id = task_id_param)
        for update of p
    loop
        lost := case when holder_died_param and worker_id_param is not null
                     then t.lost_by || worker_id_param else t.lost_by end;
        insert into task_state (task_id, lost_by) values (t.id, lost)
        on conflict (task_id) do update set lost_by = excluded.lost_by;
        if holder_died_param and cardinality(lost) >= quarantine_after_param
           and exists (
               select 1 from public.tasks o
               where o.status = 'Complete' and o.id <> t.id
                 and o.worker_id <> all (lost)
                 and o.generation_processed_at >= (
                     select coalesce(min(w.failed_at), now()) from worker_state w
                     where w.worker_id = any (lost))) then
            update public.tasks
            set status = 'Failed', attempts = attempts + 1,
                generation_processed_at = now(), updated_at = now(),
                error_message = format('quarantined: in progress on %s workers that died (%s)',
                                       cardinality(lost), array_to_string(lost, ', '))
            where id = t.id;
            update task_state set quarantined_at = now() where task_id = t.id;
            update worker_state set task_caused = true where worker_id = any (lost);
            insert into worker_events (worker_id, kind, reason, detail)
            select w, 'reclassified', 'task_caused', jsonb_build_object('task_id', t.id)
            from unnest(lost) w;
            quarantined := quarantined || to_jsonb(t.id);
        elsif t.attempts + 1 >= lim then
            update public.tasks
            set status = 'Failed', attempts = attempts + 1, error_message = error_message_param,
                generation_processed_at = now(), updated_at = now()
            where id = t.id;
            failed := failed || to_jsonb(t.id);
        else
            update public.tasks
            set status = 'Queued', attempts = attempts + 1, error_message = error_message_param,
                worker_id = null, generation_started_at = null, updated_at = now()
            where id = t.id;
            requeued := requeued || to_jsonb(t.id);
        end if;
    end loop;
    perform set_config('application_name', caller, true);
    if worker_id_param is not null and (requeued || failed || quarantined) <> '[]'::jsonb then
        perform orch_own_worker(worker_id_param);
        update worker_state set last_task_finished_at = now() where worker_id = worker_id_param;
    end if;
    return jsonb_build_object('requeued', requeued, 'failed', failed,
                              'quarantined', quarantined);
end
$$;

-- Upkeep by the leader: the app keeps its own logs and its own retries, so there
-- is nothing of its to prune or dead-letter here.
create function orch_maintenance(
    lease_name_param text, lease_epoch_param bigint, log_retention_param interval
) returns json
language plpgsql as $$
begin
    perform orch_check_lease(lease_name_param, lease_epoch_param);
    return json_build_object('logs_pruned', 0, 'tasks_dead_lettered', 0);
end
$$;

-- Tasks come from the app (a project, a task type it knows, credits): never from us.
create function orch_enqueue_tasks(tasks_param jsonb) returns integer
language plpgsql as $$
begin
    raise exception 'enqueue is not available on an adopted Headless-Wan2GP / Reigh database'
        using errcode = 'GOL02',
              hint = 'tasks are created by the app (they need a project and a known task type)';
end
$$;

------------------------------------------------------------------------------
-- The heartbeat, extended in place. The worker calls
-- `public.func_worker_heartbeat_with_logs(..., status_param)` every 20 s and reads
-- only `success` from the answer. Its body is kept, unchanged, under our name and
-- still runs first; the function the worker calls keeps its signature, result,
-- attributes, comment and grants (`create or replace` keeps them) and adds:
-- - the first heartbeat of a worker we launched marks it ready (`active`);
-- - a crash it reports fails our row (`crashed`);
-- - a row we are draining, failed or released is never turned back into a live
--   one by a late heartbeat (drain honoured).
-- Rows we never launched nor acted on are left to the old body alone.
------------------------------------------------------------------------------

create function orch_heartbeat_seen(
    worker_id_param text, before_param text, status_param text
) returns void
language plpgsql as $$
declare
    ours worker_state%rowtype;
begin
    select * into ours from worker_state where worker_id = worker_id_param for update;
    if not found then
        return;
    end if;
    if ours.status in ('terminating', 'terminated', 'error') then
        update public.workers set status = before_param
        where id = worker_id_param and before_param is not null
          and status is distinct from before_param;
    elsif status_param = 'crashed' then
        update worker_state
        set status = 'error', termination_reason = 'crashed', failed_at = now()
        where worker_id = worker_id_param;
        insert into worker_events (worker_id, kind, reason, detail)
        values (worker_id_param, 'error', 'crashed', jsonb_build_object('from', ours.status));
    elsif ours.status = 'spawning' then
        update worker_state set status = 'active', ready_at = coalesce(ready_at, now())
        where worker_id = worker_id_param;
        perform orch_mirror_status(worker_id_param, 'active', '{}'::jsonb);
        insert into worker_events (worker_id, kind, reason, detail)
        values (worker_id_param, 'active', 'first_heartbeat', jsonb_build_object('from', 'spawning'));
    end if;
end
$$;

do $$
declare
    live constant regprocedure := to_regprocedure(
        'public.func_worker_heartbeat_with_logs(text, integer, integer, jsonb, uuid, text)');
    fn pg_proc%rowtype;
    attributes text := '';
    setting text;
begin
    if live is null then
        raise notice 'no worker heartbeat (text, integer, integer, jsonb, uuid, text): not extended';
        return;
    end if;
    select * into fn from pg_proc where oid = live;
    if fn.proargnames[1:6] is distinct from array['worker_id_param', 'vram_total_mb_param',
            'vram_used_mb_param', 'logs_param', 'current_task_id_param', 'status_param'] then
        raise notice 'the worker heartbeat has other parameter names: not extended';
        return;
    end if;
    execute replace(pg_get_functiondef(live),
                    'FUNCTION public.func_worker_heartbeat_with_logs(',
                    'FUNCTION orchestrator.legacy_worker_heartbeat_with_logs(');
    revoke all on function legacy_worker_heartbeat_with_logs(text, integer, integer, jsonb, uuid, text)
        from public;
    foreach setting in array coalesce(fn.proconfig, '{}') loop
        attributes := attributes || format(' set %s = %s', split_part(setting, '=', 1),
                                           substr(setting, strpos(setting, '=') + 1));
    end loop;
    execute format(
        'create or replace function public.func_worker_heartbeat_with_logs(%s) returns %s '
        'language plpgsql %s %s%s as %L',
        pg_get_function_arguments(live), pg_get_function_result(live),
        case fn.provolatile when 'i' then 'immutable' when 's' then 'stable' else 'volatile' end,
        case when fn.prosecdef then 'security definer' else 'security invoker' end,
        attributes,
        $wrapper$
declare
    before text;
    answer jsonb;
begin
    select status into before from public.workers where id = worker_id_param;
    answer := orchestrator.legacy_worker_heartbeat_with_logs(
        worker_id_param, vram_total_mb_param, vram_used_mb_param, logs_param,
        current_task_id_param, status_param);
    perform orchestrator.orch_heartbeat_seen(worker_id_param, before, status_param);
    return answer;
end
$wrapper$);
end
$$;
