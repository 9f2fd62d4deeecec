-- Least privilege, re-applied after every migrate (idempotent).
--
-- Supabase exposes the `public` schema to the anon key, which browsers hold, and
-- its default privileges grant every new table and function to `anon` and
-- `authenticated`. So:
-- - every table we own has row level security on and no grant to PUBLIC, `anon`
--   or `authenticated`;
-- - every function we own is revoked from PUBLIC, `anon` and `authenticated`; the
--   entry points are `security definer` with a fixed search_path and granted only
--   to `service_role` (where it exists: the REST store's key) and, for the worker
--   API, to `gpu_worker` (a role for workers, created here); the helpers they call
--   (`helpers` below) run as their caller, the definer, and are granted to nobody:
--   a definer with `set search_path` costs a configuration change per call, too
--   much inside the claim;
-- - the migrating role owns everything and keeps every right.
-- Tables of a Headless-Wan2GP / Reigh database (`tasks`, `workers`, `system_logs`
-- there belong to the app) keep their own RLS and grants. Adopted, everything of
-- ours is in schema `orchestrator`, closed to all but `service_role`; its adapter
-- views over the app's rows are revoked like our tables.
do $$
declare
    here constant text := current_schema();
    worker_api constant text[] := array[
        'func_claim_available_task', 'func_worker_heartbeat_with_logs',
        'func_mark_task_complete', 'func_mark_task_failed', 'func_tasks_held_by'];
    -- (the adapter's per-row helpers must stay inlinable: invoker, no settings)
    helpers constant text[] := array[
        'orch_check_lease', 'orch_task_attempts_limit', 'orch_try_timestamptz',
        'orch_adopted_at', 'orch_legacy_has_pod', 'orch_legacy_status',
        'orch_legacy_row_status', 'orch_mirror_status', 'orch_own_worker'];
    adopted constant boolean := to_regclass(format('%I.worker_state', current_schema())) is not null;
    legacy constant boolean := exists (select 1 from pg_type where typname = 'task_status')
        or exists (select 1 from information_schema.columns
                   where table_schema = current_schema() and table_name = 'workers'
                     and column_name = 'instance_type');
    tables text[] := array['worker_events', 'orchestrator_events', 'orchestrator_leases',
                           'orchestrator_migrations', 'orchestrator_settings'];
    outsiders text[] := array[]::text[];
    fn record;
    tbl text;
    who text;
begin
    if not exists (select 1 from pg_roles where rolname = 'gpu_worker') then
        begin
            create role gpu_worker nologin;
        exception when insufficient_privilege then
            raise notice 'cannot create role gpu_worker (no CREATEROLE): the worker API is '
                         'granted to service_role only';
        end;
    end if;
    if adopted then
        tables := tables || array['worker_state', 'task_state'];
    elsif not legacy then
        tables := tables || array['tasks', 'workers', 'system_logs'];
    end if;
    for who in select rolname from pg_roles where rolname in ('anon', 'authenticated') loop
        outsiders := outsiders || who;
    end loop;

    if adopted then
        execute format('revoke all on schema %I from public', here);
        foreach tbl in array array['workers', 'tasks', 'system_logs'] loop
            execute format('revoke all on table %I.%I from public', here, tbl);
            foreach who in array outsiders loop
                execute format('revoke all on table %I.%I from %I', here, tbl, who);
            end loop;
        end loop;
        if exists (select 1 from pg_roles where rolname = 'service_role') then
            execute format('grant usage on schema %I to service_role', here);
        end if;
    end if;

    foreach tbl in array tables loop
        execute format('alter table %I.%I enable row level security', here, tbl);
        execute format('revoke all on table %I.%I from public', here, tbl);
        foreach who in array outsiders loop
            execute format('revoke all on table %I.%I from %I', here, tbl, who);
        end loop;
    end loop;

    for fn in
        select p.oid::regprocedure as sig, p.proname
        from pg_proc p join pg_namespace n on n.oid = p.pronamespace
        where n.nspname = here
          and (p.proname like 'orch\_%' or p.proname = any (worker_api))
    loop
        execute format('revoke all on function %s from public', fn.sig);
        foreach who in array outsiders loop
            execute format('revoke all on function %s from %I', fn.sig, who);
        end loop;
        if fn.proname = any (helpers) then
            execute format('alter function %s security invoker reset all', fn.sig);
            if exists (select 1 from pg_roles where rolname = 'service_role') then
                execute format('revoke all on function %s from service_role', fn.sig);
            end if;
            continue;
        end if;
        execute format('alter function %s security definer set search_path = pg_catalog, %I',
                       fn.sig, here);
        if exists (select 1 from pg_roles where rolname = 'service_role') then
            execute format('grant execute on function %s to service_role', fn.sig);
        end if;
        if fn.proname = any (worker_api)
           and exists (select 1 from pg_roles where rolname = 'gpu_worker') then
            execute format('grant execute on function %s to gpu_worker', fn.sig);
        end if;
    end loop;
end
$$;

-- PostgREST (Supabase's Data API) caches the schema: let it see new functions.
notify pgrst, 'reload schema';
