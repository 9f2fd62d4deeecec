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
