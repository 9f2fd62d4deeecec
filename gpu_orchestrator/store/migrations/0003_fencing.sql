-- Fencing, compare-and-set on what the plan observed, pod sightings and blind
-- spells (issue 8).
--
-- Every mutating orchestrator function now takes the lease name and epoch first
-- and refuses (SQLSTATE GOL01, "lease lost") when that lease has moved on or
-- expired by the database clock. `null, null` is an operator's command: audited
-- in `orchestrator_events`, compare-and-set like every transition, not a leader's.
-- The old signatures are dropped, so an orchestrator of an older version (still
-- running during a deploy) can no longer write unfenced.

-- First successful pod list that did not show this worker's pod (null: shown).
alter table workers add column if not exists pod_missing_since timestamptz;

drop function if exists orch_create_worker(text, text, jsonb);
drop function if exists orch_record_pod(text, text, numeric);
drop function if exists orch_transition_worker(text, text[], text, text, jsonb, boolean);
drop function if exists orch_mark_released(text);
drop function if exists orch_record_event(text, text, text, jsonb);
drop function if exists func_mark_task_failed(uuid, text, text, integer);
drop function if exists orch_release_tasks(text, uuid, integer, text, boolean, integer);

-- The intent row, written before the provider is asked for a pod.
create or replace function orch_create_worker(
    lease_name_param text, lease_epoch_param bigint,
    worker_id_param text, provider_param text, detail_param jsonb
) returns void
language plpgsql as $$
begin
    perform orch_check_lease(lease_name_param, lease_epoch_param);
    insert into workers (id, status, provider, offering, probe, metadata)
    values (worker_id_param, 'spawning', provider_param, detail_param ->> 'offering',
            coalesce((detail_param ->> 'probe')::boolean, false), detail_param);
    insert into worker_events (worker_id, kind, reason, detail)
    values (worker_id_param, 'spawning', detail_param ->> 'reason', detail_param);
end
$$;

-- The pod of a worker: answered by a create, or found in a pod list after a
-- create whose answer was lost (`adopted_param`). A row never changes pods.
create or replace function orch_record_pod(
    lease_name_param text, lease_epoch_param bigint,
    worker_id_param text, pod_id_param text, cost_per_hr_param numeric,
    adopted_param boolean default false
) returns boolean
language plpgsql as $$
begin
    perform orch_check_lease(lease_name_param, lease_epoch_param);
    update workers set pod_id = pod_id_param, cost_per_hr = cost_per_hr_param
    where id = worker_id_param and (pod_id is null or pod_id = pod_id_param);
    if not found then
        return false;
    end if;
    insert into worker_events (worker_id, kind, reason, detail)
    values (worker_id_param, case when adopted_param then 'pod_adopted' else 'pod_created' end,
            null, jsonb_build_object('pod_id', pod_id_param, 'cost_per_hr', cost_per_hr_param));
    return true;
end
$$;

-- What a successful pod list showed: `missing_param` rows' pods were absent
-- (their absence is dated from the first such list), `seen_param` rows' pods were
-- there again.
create or replace function orch_record_pod_sightings(
    lease_name_param text, lease_epoch_param bigint, missing_param text[], seen_param text[]
) returns void
language plpgsql as $$
begin
    perform orch_check_lease(lease_name_param, lease_epoch_param);
    update workers set pod_missing_since = now()
    where id = any (missing_param) and pod_missing_since is null;
    update workers set pod_missing_since = null
    where id = any (seen_param) and pod_missing_since is not null;
end
$$;

-- Compare-and-set of a worker's status on what the plan observed, with its event
-- in the same transaction. False when the row moved on (someone else moved first):
-- - its status is not one of `from_param`;
-- - `check_heartbeat_param`: it heartbeated after `heartbeat_seen_param` (the plan
--   judged it silent);
-- - `require_idle_param`: it holds a task (the plan judged it idle). The row lock
--   taken first orders this against a claim, which locks the row too.
-- `released_param`: the pod is already known gone (nothing left to terminate).
create or replace function orch_transition_worker(
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
    prev workers%rowtype;
begin
    perform orch_check_lease(lease_name_param, lease_epoch_param);
    select * into prev from workers where id = worker_id_param for update;
    if not found or prev.status::text <> all (from_param) then
        return false;
    end if;
    -- The plan's heartbeat time went through a float: a millisecond of slack.
    if check_heartbeat_param and prev.last_heartbeat is not null
       and (heartbeat_seen_param is null
            or prev.last_heartbeat > heartbeat_seen_param + interval '1 millisecond') then
        return false;
    end if;
    if require_idle_param and exists (
        select 1 from tasks t where t.worker_id = worker_id_param and t.status = 'In Progress'
    ) then
        return false;
    end if;
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
    where id = worker_id_param;
    insert into worker_events (worker_id, kind, reason, detail)
    values (worker_id_param, to_param, reason_param, detail_param);
    return true;
end
$$;

-- The pod of a failed worker is confirmed gone.
create or replace function orch_mark_released(
    lease_name_param text, lease_epoch_param bigint, worker_id_param text
) returns void
language plpgsql as $$
begin
    perform orch_check_lease(lease_name_param, lease_epoch_param);
    with released as (
        update workers set terminated_at = now()
        where id = worker_id_param and terminated_at is null
        returning id
    )
    insert into worker_events (worker_id, kind, reason)
    select id, 'released', null from released;
end
$$;

-- Releases `In Progress` tasks with `attempts + 1`: back to `Queued` below the
-- limit, `Failed` (dead-lettered) at it. Selects the tasks held by `worker_id_param`
-- (null: held by nobody), optionally only `task_id_param`. When the holder died
-- (`holder_died_param`), it is added to the task's `lost_by`; a task that has
-- now killed `quarantine_after_param` workers is quarantined as poison and those
-- workers' deaths are reclassified as task-caused (neutral for the breaker).
-- Fenced for the orchestrator; a worker reporting its own failed task passes nulls.
create or replace function orch_release_tasks(
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
begin
    perform orch_check_lease(lease_name_param, lease_epoch_param);
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
    released := orch_release_tasks(null, null, holder, task_id_param, max_attempts_param,
                                   left(error_message_param, 4000));
    return jsonb_build_object('success', true,
                              'requeued', jsonb_array_length(released -> 'requeued') > 0);
end
$$;

-- Moves the oldest claimable task to `In Progress` for this worker. Nothing is
-- returned when the queue is empty or the worker may not claim (draining,
-- terminated, in error, unknown). The worker's row is locked `for share` first,
-- so a drain (which locks it to update) and a claim happen one after the other:
-- never a drain judged on "idle" racing a claim that makes it busy.
create or replace function func_claim_available_task(worker_id_param text) returns setof tasks
language plpgsql as $$
begin
    perform 1 from workers w
    where w.id = worker_id_param
      and w.status in ('spawning', 'active', 'external')
      and w.drain_requested_at is null
    for share;
    if not found then
        return;
    end if;
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
            order by q.created_at, q.id
            limit 1
            for update skip locked)
      and t.status = 'Queued'
    returning t.*;
end
$$;
