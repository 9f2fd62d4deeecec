-- A timestamp a worker supplied (or the old orchestrator wrote in metadata) that
-- does not parse is dropped, not fatal. Stable, not immutable: the text ->
-- timestamptz cast reads TimeZone and accepts 'now'.
-- ISO 8601 text (what Python's isoformat writes) is parsed by jsonpath's
-- `datetime()`, which fails quietly: only other text reaches the cast inside an
-- exception block, whose subtransaction costs more than the rest of a row of an
-- adopted database's `workers` view (which parses a legacy `terminated_at`).
create or replace function orch_try_timestamptz(value text) returns timestamptz
language plpgsql stable as $$
declare
    iso constant jsonb := jsonb_path_query_first(
        to_jsonb(value), '$.datetime() ? (@.type() like_regex "^(date|timestamp)")', '{}', true);
begin
    if value is null or iso is not null then
        return (iso #>> '{}')::timestamptz;
    end if;
    begin
        return value::timestamptz;
    exception when others then
        return null;
    end;
end
$$;
