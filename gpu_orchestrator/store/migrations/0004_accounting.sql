-- Issue 9: count what really failed, keep the attempts limit in the database,
-- operator spawns carried out by the leader, launch fingerprints, maintenance.

-- The launch fingerprint (image, start command, GPU types, non-secret pod env) a
-- worker was launched with: failures of one do not hold back another.
alter table workers add column if not exists fingerprint text;

-- The intent row, written before the provider is asked for a pod.
create or replace function orch_create_worker(
    lease_name_param text, lease_epoch_param bigint,
    worker_id_param text, provider_param text, detail_param jsonb
) returns void
language plpgsql as $$
begin
    perform orch_check_lease(lease_name_param, lease_epoch_param);
    insert into workers (id, status, provider, offering, probe, fingerprint, metadata)
    values (worker_id_param, 'spawning', provider_param, detail_param ->> 'offering',
            coalesce((detail_param ->> 'probe')::boolean, false),
            detail_param ->> 'fingerprint', detail_param);
    insert into worker_events (worker_id, kind, reason, detail)
    values (worker_id_param, 'spawning', detail_param ->> 'reason', detail_param);
end
$$;

-- Periodic upkeep by the leader: `system_logs` older than the retention go, and
-- queued tasks whose attempts reached the limit (never handed out) are
-- dead-lettered, so nothing waits forever. Returns what it did.
create or replace function orch_maintenance(
    lease_name_param text, lease_epoch_param bigint, log_retention_param interval
) returns json
language plpgsql as $$
declare
    pruned integer;
    dead integer;
    lim constant integer := orch_task_attempts_limit(null);
begin
    perform orch_check_lease(lease_name_param, lease_epoch_param);
    pruned := orch_prune_system_logs(log_retention_param);
    with gone as (
        update tasks
        set status = 'Failed', generation_processed_at = now(), updated_at = now(),
            error_message = format('dead-lettered: %s attempts reached MAX_TASK_ATTEMPTS (%s)',
                                   attempts, lim)
        where status = 'Queued' and attempts >= lim
        returning 1
    )
    select count(*) into dead from gone;
    return json_build_object('logs_pruned', pruned, 'tasks_dead_lettered', dead);
end
$$;

-- Releases `In Progress` tasks with `attempts + 1`: back to `Queued` below the
-- limit, `Failed` (dead-lettered) at it. Selects the tasks held by `worker_id_param`
-- (null: held by nobody), optionally only `task_id_param`. When the holder died
-- (`holder_died_param`), it is added to the task's `lost_by`; a task that has
-- now killed `quarantine_after_param` workers is quarantined as poison and those
-- workers' deaths are reclassified as task-caused (neutral for the breaker), but
-- only while the platform is demonstrably fine: another worker completed another
-- task since the first of those deaths. Otherwise the deaths are the platform's
-- (they count) and the task is requeued under the attempts limit.
-- The limit is the database's (`orch_max_task_attempts`); a caller may only lower it.
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
    lim constant integer := orch_task_attempts_limit(max_attempts_param);
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
        if holder_died_param and cardinality(lost) >= quarantine_after_param
           and exists (
               select 1 from tasks o
               where o.status = 'Complete' and o.id <> t.id
                 and o.worker_id <> all (lost)
                 and o.generation_processed_at >= (
                     select coalesce(min(w.failed_at), now()) from workers w
                     where w.id = any (lost))) then
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
        elsif t.attempts + 1 >= lim then
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

-- A task failed on its worker: `attempts + 1`, requeued below the limit. The
-- limit is the database's; `max_attempts_param` may only lower it (null: the limit).
create or replace function func_mark_task_failed(
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
-- never a drain judged on "idle" racing a claim that makes it busy. A task whose
-- attempts reached the limit is never handed out (maintenance dead-letters it).
create or replace function func_claim_available_task(worker_id_param text) returns setof tasks
language plpgsql as $$
declare
    lim constant integer := orch_task_attempts_limit(null);
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
              and q.attempts < lim
            order by q.created_at, q.id
            limit 1
            for update skip locked)
      and t.status = 'Queued'
    returning t.*;
end
$$;

-- The `In Progress` tasks a worker holds: a restarted agent releases what an
-- earlier process of its pod left behind.
create or replace function func_tasks_held_by(worker_id_param text) returns json
language sql stable as $$
    select coalesce(json_agg(t.id order by t.generation_started_at), '[]'::json)
    from tasks t
    where t.worker_id = worker_id_param and t.status = 'In Progress';
$$;
