-- The REST store (Supabase's Data API) cannot migrate: it checks the schema with
-- this function when it starts, and exits with advice when the database is behind.
create or replace function orch_schema_version() returns json
language sql stable as $$
    select coalesce(json_agg(version order by version), '[]'::json) from orchestrator_migrations;
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
