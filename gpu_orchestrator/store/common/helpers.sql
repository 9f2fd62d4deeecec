-- A timestamp a worker supplied (or the old orchestrator wrote in metadata) that
-- does not parse is dropped, not fatal. Stable,
-- not immutable: the text -> timestamptz cast reads TimeZone and accepts 'now'.
create or replace function orch_try_timestamptz(value text) returns timestamptz
language plpgsql stable as $$
begin
    return value::timestamptz;
exception when others then
    return null;
end
$$;
