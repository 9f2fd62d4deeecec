-- Appends an orchestrator-level event (breaker transition, blind spell, orphan
-- pod, operator lever).
create or replace function orch_record_event(
    lease_name_param text, lease_epoch_param bigint,
    kind_param text, actor_param text, reason_param text, detail_param jsonb default '{}'::jsonb
) returns json
language plpgsql as $$
declare
    out json;
begin
    perform orch_check_lease(lease_name_param, lease_epoch_param);
    insert into orchestrator_events (kind, actor, reason, detail)
    values (kind_param, actor_param, reason_param, detail_param)
    returning json_build_object('id', id, 'at', at, 'kind', kind) into out;
    return out;
end
$$;

-- For people (the status page's timeline): orchestrator events within the last
-- `since_sec_param` seconds, oldest first, at most 500.
create or replace function orch_recent_events(since_sec_param double precision) returns json
language sql stable as $$
    select coalesce(json_agg(json_build_object(
               'at', extract(epoch from e.at), 'kind', e.kind, 'reason', e.reason,
               'actor', e.actor) order by e.at), '[]'::json)
    from (select * from orchestrator_events
          where at > now() - make_interval(secs => since_sec_param)
          order by at desc limit 500) e;
$$;
