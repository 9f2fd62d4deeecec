create or replace function orch_set_setting(name_param text, value_param jsonb) returns void
language sql as $$
    insert into orchestrator_settings (name, value) values (name_param, value_param)
    on conflict (name) do update set value = excluded.value, set_at = now()
    where orchestrator_settings.value is distinct from excluded.value;
$$;

-- `MAX_TASK_ATTEMPTS` as the orchestrator set it (3 until it did); a caller's own
-- limit may lower it, never raise it, and null means the database's. plpgsql, not
-- sql: the claim calls it every time, and a sql function is planned per call.
create or replace function orch_task_attempts_limit(asked_param integer) returns integer
language plpgsql stable as $$
declare
    configured integer;
begin
    select (value #>> '{}')::integer into configured
    from orchestrator_settings where name = 'max_task_attempts';
    configured := coalesce(configured, 3);
    return least(coalesce(asked_param, configured), configured);
end
$$;
