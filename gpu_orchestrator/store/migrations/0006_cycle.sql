-- Issue 13: a cheaper cycle. Two functions beside the existing ones (which keep
-- serving older orchestrators during a deploy):
-- - `orch_snapshot_v2`: the snapshot with each worker row's roles decided here,
--   times as float8 epoch seconds;
-- - `orch_apply_writes`: the fenced writes of many actions in one call, so N
--   spawns and M terminations cost a constant number of round trips.

-- Everything one cycle needs, in one round trip. As `orch_snapshot`, except for
-- `workers`: each row says which roles it plays, so the selection lives here
-- only: [id, status, acted_on, launch, live, created, ready, heartbeat, drain,
-- finished, tasks_completed, pod_id, termination_reason, cost_per_hr,
-- pod_missing_since, offering, probe, failed, task_caused, fingerprint].
-- - acted_on: not released and in a status the cycle manages (a `WorkerView`);
-- - launch: live, or launched, failed or ready within the horizon (a `Launch`);
-- - live: its pod may still run.
-- `date_part` answers float8 directly: the same double the client would parse
-- from `extract`'s numeric, without the numeric.
create or replace function orch_snapshot_v2(
    horizon_sec_param double precision default 1800,
    queue_cap_param integer default null
) returns json
language plpgsql stable as $$
declare
    since constant timestamptz := now() - make_interval(secs => horizon_sec_param);
    lim constant integer := orch_task_attempts_limit(null);
    served constant bigint := coalesce((
        select max((e.detail ->> 'up_to_id')::bigint) from orchestrator_events e
        where e.kind = 'spawn_requests_served'), 0);
begin
    return json_build_object(
        'now', date_part('epoch', now()),
        'workers', coalesce((
            select json_agg(json_build_array(
                w.id, w.status, r.acted_on, r.live or w.created_at > since
                    or w.failed_at > since or w.ready_at > since, r.live,
                date_part('epoch', w.created_at), date_part('epoch', w.ready_at),
                date_part('epoch', w.last_heartbeat), date_part('epoch', w.drain_requested_at),
                date_part('epoch', w.last_task_finished_at), w.tasks_completed, w.pod_id,
                w.termination_reason, w.cost_per_hr, date_part('epoch', w.pod_missing_since),
                w.offering, w.probe, date_part('epoch', w.failed_at), w.task_caused,
                w.fingerprint))
            from workers w,
                 lateral (select w.terminated_at is null
                                 and w.status in ('spawning', 'active', 'terminating', 'error',
                                                  'external') as acted_on,
                                 w.terminated_at is null
                                 and w.status in ('spawning', 'active', 'terminating') as live) r
            where r.acted_on or w.created_at > since or w.failed_at > since
               or w.ready_at > since),
            '[]'::json),
        'holds', coalesce((
            select json_agg(json_build_array(
                t.id, t.worker_id, date_part('epoch', t.generation_started_at), t.attempts))
            from tasks t
            where t.status = 'In Progress'), '[]'::json),
        'queued', (
            select count(*) from (
                select from tasks q
                where q.status = 'Queued' and q.run_type = 'gpu' and q.attempts < lim
                limit queue_cap_param) c),
        'finished', (
            select json_build_array(count(*) filter (where t.status = 'Complete'),
                                    count(*) filter (where t.status = 'Failed'))
            from tasks t
            where t.status in ('Complete', 'Failed') and t.generation_processed_at > since),
        'oldest_queued_at', (
            select date_part('epoch', q.created_at) from tasks q
            where q.status = 'Queued' and q.run_type = 'gpu' and q.attempts < lim
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
            'breaker_reset_at', (
                select date_part('epoch', max(e.at)) from orchestrator_events e
                where e.kind = 'breaker_reset'),
            'spawn_requests', (
                select json_build_array(coalesce(sum((e.detail ->> 'count')::integer), 0),
                                        max(e.id))
                from orchestrator_events e
                where e.kind = 'spawn_requested' and e.id > served)));
end
$$;

-- The writes of many actions in one transaction, each action a list of writes
-- run in order by the same functions a single call runs (each checks the lease
-- itself, exactly as when called alone). Returns one answer per action:
-- {"answers": [one per write run]} or {"error": message, "sqlstate": code}.
-- - A write answering `false` (a compare-and-set that found the row moved on)
--   ends its action: the writes after it depend on it.
-- - Each action is its own subtransaction: a failed action leaves no trace and
--   the others still apply, as separate calls would.
-- - A lost lease (GOL01) aborts the whole call: nothing of it applies.
create or replace function orch_apply_writes(
    lease_name_param text, lease_epoch_param bigint, actions_param jsonb
) returns jsonb
language plpgsql as $$
declare
    action jsonb;
    w jsonb;
    op text;
    answer jsonb;
    answers jsonb;
    out jsonb := '[]'::jsonb;
begin
    for action in select value from jsonb_array_elements(actions_param) loop
        answers := '[]'::jsonb;
        begin
            for w in select value from jsonb_array_elements(action) loop
                op := w ->> 'op';
                answer := 'null'::jsonb;
                if op = 'create_worker' then
                    perform orch_create_worker(
                        lease_name_param, lease_epoch_param, w ->> 'worker_id',
                        w ->> 'provider', w -> 'detail');
                elsif op = 'record_pod' then
                    answer := to_jsonb(orch_record_pod(
                        lease_name_param, lease_epoch_param, w ->> 'worker_id', w ->> 'pod_id',
                        (w ->> 'cost_per_hr')::numeric, (w ->> 'adopted')::boolean));
                elsif op = 'transition_worker' then
                    answer := to_jsonb(orch_transition_worker(
                        lease_name_param, lease_epoch_param, w ->> 'worker_id',
                        array(select jsonb_array_elements_text(w -> 'from')), w ->> 'to',
                        w ->> 'reason', w -> 'detail', (w ->> 'released')::boolean,
                        (w ->> 'check_heartbeat')::boolean,
                        (w ->> 'heartbeat_seen')::timestamptz,
                        (w ->> 'require_idle')::boolean));
                elsif op = 'mark_released' then
                    perform orch_mark_released(
                        lease_name_param, lease_epoch_param, w ->> 'worker_id');
                elsif op = 'release_tasks' then
                    answer := orch_release_tasks(
                        lease_name_param, lease_epoch_param, w ->> 'worker_id',
                        (w ->> 'task_id')::uuid, (w ->> 'max_attempts')::integer,
                        w ->> 'error_message', (w ->> 'holder_died')::boolean);
                elsif op = 'record_event' then
                    answer := orch_record_event(
                        lease_name_param, lease_epoch_param, w ->> 'kind', w ->> 'actor',
                        w ->> 'reason', w -> 'detail')::jsonb;
                elsif op = 'record_pod_sightings' then
                    perform orch_record_pod_sightings(
                        lease_name_param, lease_epoch_param,
                        array(select jsonb_array_elements_text(w -> 'missing')),
                        array(select jsonb_array_elements_text(w -> 'seen')));
                else
                    raise exception 'orch_apply_writes: unknown write %', op
                        using errcode = '22023';
                end if;
                answers := answers || jsonb_build_array(answer);
                exit when answer = 'false'::jsonb;
            end loop;
            out := out || jsonb_build_array(jsonb_build_object('answers', answers));
        exception when others then
            if sqlstate = 'GOL01' then
                raise;
            end if;
            out := out || jsonb_build_array(
                jsonb_build_object('error', sqlerrm, 'sqlstate', sqlstate));
        end;
    end loop;
    return out;
end
$$;
