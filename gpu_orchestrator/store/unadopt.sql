-- Undoes an adoption (docs/migrating.md, "Rolling back"): the app's heartbeat
-- as it was before (its kept body, under its own name; its grants and comment
-- never changed), then nothing of ours is left. Stop every gpu-orchestrator first.
-- `gpu-orchestrator migrate --print-sql --unadopt` prints this script.
begin;
do $$
declare
    kept constant regprocedure := to_regprocedure(
        'orchestrator.legacy_worker_heartbeat_with_logs(text, integer, integer, jsonb, uuid, text)');
begin
    if kept is not null then
        execute replace(pg_get_functiondef(kept),
                        'FUNCTION orchestrator.legacy_worker_heartbeat_with_logs(',
                        'FUNCTION public.func_worker_heartbeat_with_logs(');
    end if;
end
$$;
drop schema if exists orchestrator cascade;
commit;
