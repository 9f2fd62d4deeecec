-- =============================================================================
-- legacy_reigh.sql — fixture of the LEGACY database (Reigh app Supabase DB as
-- used by Headless-Wan2GP workers + the old Headless-Wan2GP-Orchestrator).
--
-- Scope: only the objects the GPU pipeline touches, each in its FINAL state after
-- replaying banodoco/reigh-app supabase/migrations/*.sql in the order the files
-- were FIRST COMMITTED (git log --diff-filter=A), snapshot HEAD
-- 3a6fd3d8c0410ccbe926d3824b2e3be039d489a7 (2026-04-11). Files whose name starts
-- with "_" (_applied_*, _hold_*) are skipped, as the Supabase CLI skips them.
--
-- Citations: "reigh-app <path> @<sha>" = the last commit that touched the file
-- that defines the object's final state (all paths under supabase/migrations/).
--
-- Runs ONCE on an EMPTY Postgres 15 database, as a superuser (postgres), with the
-- roles anon / authenticated / service_role already present. Not idempotent.
--
-- Not reproduced (app-only, not touched by the GPU pipeline): generations, shots,
-- credits_ledger, billing triggers, realtime publication, storage, the app's
-- other ~400 functions. Where one of them would matter it is named below.
-- =============================================================================

\set ON_ERROR_STOP 1
SET client_min_messages = warning;
SET search_path = public;

-- -----------------------------------------------------------------------------
-- 0. Supabase platform emulation (NOT from any migration).
--    A Supabase project grants, via default privileges of role postgres, ALL on
--    new tables/sequences/functions in schema public to anon, authenticated and
--    service_role by NAME, on top of Postgres' own default EXECUTE-to-PUBLIC for
--    functions. The app's REVOKE ... FROM anon, authenticated statements below
--    only remove those named grants: PUBLIC keeps EXECUTE (see findings).
--    On hosted Supabase service_role also has BYPASSRLS; the local roles do not
--    (role attributes are cluster-wide, so this fixture does not change them).
-- -----------------------------------------------------------------------------
GRANT USAGE ON SCHEMA public TO anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON TABLES    TO anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON SEQUENCES TO anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON FUNCTIONS TO anon, authenticated, service_role;

-- -----------------------------------------------------------------------------
-- 0b. Minimal `auth` schema STUB (Supabase GoTrue owns the real one; it does not
--     exist on a plain Postgres). Only the three helpers the objects below call.
--     Bodies follow Supabase's definitions: they read the JWT claims PostgREST
--     puts in the GUCs request.jwt.claims / request.jwt.claim.*.
--     To act like a PostgREST request made with the service key:
--       SET ROLE service_role; SET request.jwt.claims = '{"role":"service_role"}';
-- -----------------------------------------------------------------------------
CREATE SCHEMA auth;
GRANT USAGE ON SCHEMA auth TO anon, authenticated, service_role;

CREATE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE AS $$
  SELECT coalesce(
    nullif(current_setting('request.jwt.claim.sub', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
  )::uuid
$$;
CREATE FUNCTION auth.role() RETURNS text LANGUAGE sql STABLE AS $$
  SELECT coalesce(
    nullif(current_setting('request.jwt.claim.role', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role')
  )::text
$$;
CREATE FUNCTION auth.jwt() RETURNS jsonb LANGUAGE sql STABLE AS $$
  SELECT coalesce(
    nullif(current_setting('request.jwt.claim', true), ''),
    nullif(current_setting('request.jwt.claims', true), '')
  )::jsonb
$$;
GRANT EXECUTE ON FUNCTION auth.uid(), auth.role(), auth.jwt() TO anon, authenticated, service_role;

-- -----------------------------------------------------------------------------
-- 1. task_status enum
--    reigh-app 20250100000000_create_base_schema.sql @94ce8b8cc23e17fcba97fc43501a35ebe912d5c6
--    No migration ever adds/renames a value. NOTE: there is no 'Error' value,
--    although func_mark_task_failed(uuid,text) below writes 'Error'.
-- -----------------------------------------------------------------------------
CREATE TYPE public.task_status AS ENUM ('Queued', 'In Progress', 'Complete', 'Failed', 'Cancelled');

-- -----------------------------------------------------------------------------
-- 2. users / projects — MINIMAL, only for tasks.project_id NOT NULL FK and for the
--    eligibility rules of claim_next_task_service_role / count_eligible_tasks_*
--    (users.credits > 0, users.settings ui.generationMethods.inCloud, <5 running).
--    Columns kept: base columns of
--      reigh-app 20250100000000_create_base_schema.sql @94ce8b8cc23e17fcba97fc43501a35ebe912d5c6
--    + users.credits (integer NOT NULL DEFAULT 0 in
--      20250113000000_add_credits_system.sql @edcf98e915864d7755018f733226e35317063910,
--      retyped numeric(10,3) in 20250115000003_support_fractional_costs.sql
--      @94ce8b8cc23e17fcba97fc43501a35ebe912d5c6).
--    Omitted: every other users/projects column, their RLS and triggers
--    (stripe ids, given_credits, auto top-up, user auto-creation trigger, ...).
-- -----------------------------------------------------------------------------
CREATE TABLE public.users (
    id       uuid PRIMARY KEY NOT NULL,
    name     text,
    email    text,
    api_keys jsonb,
    settings jsonb,
    credits  numeric(10,3) NOT NULL DEFAULT 0
);

CREATE TABLE public.projects (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
    name         text NOT NULL,
    user_id      uuid NOT NULL,
    aspect_ratio text,
    created_at   timestamptz DEFAULT now() NOT NULL,
    settings     jsonb,
    CONSTRAINT projects_user_id_users_id_fk FOREIGN KEY (user_id)
        REFERENCES public.users(id) ON DELETE CASCADE ON UPDATE NO ACTION
);
-- reigh-app 20250131000100_optimize_claim_next_task.sql @c837902b18d42199773ebfc9cfdd3c7de6057166
CREATE INDEX idx_projects_user_id ON public.projects(user_id);

-- -----------------------------------------------------------------------------
-- 3. workers
--    Created in reigh-app 20250705000001_create_workers_table.sql
--      @16e6b40dd7802b04acbfb1b3b052f685aaa98d81 (columns, CHECK, RLS, policies)
--    + current_model: 20251222000000_add_worker_model_affinity.sql
--      @71a7dbfce79e266eefeb93182e65c1bfe69380ba
--    + last_heartbeat DROP NOT NULL / DEFAULT NULL:
--      20260121210000_make_worker_heartbeat_nullable.sql @aced622f23fc435d6834ae91c0fb142d28a4e6c7
--    + policy "Authenticated users can view workers" dropped, SELECT revoked from
--      anon/authenticated: 20260313120000_restrict_worker_read_surfaces.sql
--      @388b970e34b92e912ce3eef6066956007f93d216
--    The status CHECK is exactly the migration's: ('active','inactive','terminated').
--    No migration widens it, although the old orchestrator writes 'spawning' and
--    'error' and the heartbeat guardian sends 'crashed' (see findings).
-- -----------------------------------------------------------------------------
CREATE TABLE public.workers (
    id             text PRIMARY KEY,
    instance_type  text NOT NULL,               -- 'edge', 'server', 'manual', 'external', GPU display name...
    created_at     timestamptz DEFAULT now() NOT NULL,
    last_heartbeat timestamptz DEFAULT NULL,    -- was DEFAULT now() NOT NULL until 20260121210000
    status         text DEFAULT 'active' NOT NULL
                   CONSTRAINT workers_status_check CHECK (status IN ('active', 'inactive', 'terminated')),
    metadata       jsonb DEFAULT '{}',
    current_model  text
);
COMMENT ON COLUMN public.workers.last_heartbeat IS 'Last heartbeat timestamp. NULL means worker has never sent a heartbeat.';
COMMENT ON COLUMN public.workers.current_model IS
'The model currently loaded on this worker (e.g., wan_2_2_i2v_480p). Used to prioritize same-model task assignment.';

CREATE INDEX idx_workers_status         ON public.workers(status);                   -- 20250705000001 @16e6b40d
CREATE INDEX idx_workers_last_heartbeat ON public.workers(last_heartbeat);           -- 20250705000001 @16e6b40d
CREATE INDEX idx_workers_status_heartbeat ON public.workers(status, last_heartbeat); -- 20250202000000_add_missing_columns.sql @6a811ee3bd97cdbc2f51394d94fc3f645f7c8416
CREATE INDEX idx_workers_current_model  ON public.workers(current_model) WHERE status = 'active'; -- 20251222000000 @71a7dbfc

ALTER TABLE public.workers ENABLE ROW LEVEL SECURITY;
CREATE POLICY "Service role can manage workers" ON public.workers
    FOR ALL USING (auth.role() = 'service_role');
REVOKE SELECT ON public.workers FROM authenticated;
REVOKE SELECT ON public.workers FROM anon;
GRANT SELECT ON public.workers TO service_role;

-- -----------------------------------------------------------------------------
-- 4. task_types
--    reigh-app 20250203200000_create_task_types_with_run_type.sql @d55c47853202fbad912d874e7ade5876e3463a42
--    + billing_type/unit_cost: 20250203210000_add_billing_types_to_task_types.sql @d55c47853202fbad912d874e7ade5876e3463a42
--    + tool_type:     20250902140000_add_tool_type_column_to_task_types.sql @56c511798813fd85cb65b46205288f07475d7476
--    + content_type:  20250927000000_add_content_type_to_task_types.sql @6eed071db7c1f475a72587417be34ed1ccc48cd4
--    + is_visible/supports_progress: 20260111100000_add_visibility_columns_to_task_types.sql @d8ca8c7b3f8b5426d938d733f020fc92289cbdc3
--    + RLS/policies:  20260130200000_security_audit_fixes.sql @ed0e796a96f7ed5f5715f01c22273ff01a14fa4f
--    + variant_type:  20260204191820_add_variant_type_to_task_types.sql @fddcf92718c42867cde56a78f86698818efba003
--    Rows are NOT inserted here (see legacy_reigh_seed.sql).
-- -----------------------------------------------------------------------------
CREATE TABLE public.task_types (
    id                   uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name                 text NOT NULL UNIQUE,         -- e.g. 'single_image', 'travel_orchestrator'
    run_type             text NOT NULL DEFAULT 'gpu',  -- 'gpu' | 'api'
    category             text NOT NULL,                -- 'generation', 'processing', 'orchestration', 'utility'
    display_name         text NOT NULL,
    description          text,
    base_cost_per_second numeric(10,6) NOT NULL,
    cost_factors         jsonb DEFAULT '{}',
    is_active            boolean DEFAULT true,
    created_at           timestamptz DEFAULT now() NOT NULL,
    updated_at           timestamptz DEFAULT now() NOT NULL,
    billing_type         text NOT NULL DEFAULT 'per_second',
    unit_cost            numeric(10,6) DEFAULT NULL,
    tool_type            text,
    content_type         text,
    is_visible           boolean DEFAULT false,
    supports_progress    boolean DEFAULT false,
    variant_type         text
);
ALTER TABLE public.task_types ADD CONSTRAINT check_run_type CHECK (run_type IN ('gpu', 'api'));
ALTER TABLE public.task_types ADD CONSTRAINT check_billing_type CHECK (billing_type IN ('per_second', 'per_unit'));
ALTER TABLE public.task_types ADD CONSTRAINT check_tool_type_not_null CHECK (tool_type IS NOT NULL OR is_active = false);
ALTER TABLE public.task_types ADD CONSTRAINT check_content_type CHECK (content_type IS NULL OR content_type IN ('image', 'video'));
CREATE INDEX idx_task_types_name         ON public.task_types(name);
CREATE INDEX idx_task_types_run_type     ON public.task_types(run_type);
CREATE INDEX idx_task_types_category     ON public.task_types(category);
CREATE INDEX idx_task_types_active       ON public.task_types(is_active);
CREATE INDEX idx_task_types_billing_type ON public.task_types(billing_type);
CREATE INDEX idx_task_types_tool_type    ON public.task_types(tool_type);
CREATE INDEX idx_task_types_content_type ON public.task_types(content_type);
CREATE INDEX idx_task_types_is_visible   ON public.task_types(is_visible);
COMMENT ON TABLE public.task_types IS 'Registry of all task types with their execution environment (gpu/api) and metadata';
COMMENT ON COLUMN public.task_types.run_type IS 'Execution environment: gpu (local/cloud GPU) or api (external API calls)';

ALTER TABLE public.task_types ENABLE ROW LEVEL SECURITY;
CREATE POLICY task_types_select_authenticated ON public.task_types FOR SELECT TO authenticated USING (true);
CREATE POLICY task_types_service_role_all ON public.task_types FOR ALL TO service_role USING (true) WITH CHECK (true);

-- -----------------------------------------------------------------------------
-- 5. tasks
--    Base table: reigh-app 20250100000000_create_base_schema.sql @94ce8b8cc23e17fcba97fc43501a35ebe912d5c6
--    + generation_started_at: 20250712000001_add_generation_started_at.sql @86476751c36e510fb2e828ee869ae3d2fc7b28fd
--    + worker_id (FK workers ON DELETE SET NULL): 20250705000001_create_workers_table.sql @16e6b40dd7802b04acbfb1b3b052f685aaa98d81
--    + generation_created: 20250713000001_add_generation_created_column.sql @16e6b40dd7802b04acbfb1b3b052f685aaa98d81
--    + attempts / error_message / result_data: 20250202000000_add_missing_columns.sql @6a811ee3bd97cdbc2f51394d94fc3f645f7c8416
--    + copied_from_share: 20251016000000_create_shared_generations.sql @9f6a3a00b2381c1b8828aa65ba4d80b9ccf3c014
--    + dependant_on uuid -> uuid[]: 20260121000000_support_multiple_dependencies.sql @138e09579c2a0ed378138d2f2092769d1690efd8
--    + FK task_type -> task_types(name): 20260213000000_add_tasks_task_type_fkey.sql @4b62941a337d47ee49cae8e5ea395ebb6d6789f8
--    + idempotency_key: 20260213200001_task_idempotency_key.sql @03ede6467b917a1f43e4913c14743532574a671b
--    Column order = order of ADD COLUMN in replay order.
--    NOTE: tasks.status is the ENUM, not text; updated_at has NO default and no
--    trigger maintains it.
-- -----------------------------------------------------------------------------
CREATE TABLE public.tasks (
    id                      uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
    task_type               text NOT NULL,
    params                  jsonb NOT NULL,
    status                  public.task_status DEFAULT 'Queued' NOT NULL,
    dependant_on            uuid[],
    output_location         text,
    created_at              timestamptz DEFAULT now() NOT NULL,
    updated_at              timestamptz,
    project_id              uuid NOT NULL,
    generation_processed_at timestamptz,
    generation_started_at   timestamptz,
    worker_id               text,
    generation_created      boolean DEFAULT false NOT NULL,
    attempts                int NOT NULL DEFAULT 0,
    error_message           text,
    result_data             jsonb DEFAULT '{}'::jsonb,
    copied_from_share       text,
    idempotency_key         text
);
ALTER TABLE public.tasks ADD CONSTRAINT tasks_project_id_projects_id_fk FOREIGN KEY (project_id)
    REFERENCES public.projects(id) ON DELETE CASCADE ON UPDATE NO ACTION;
ALTER TABLE public.tasks ADD CONSTRAINT tasks_worker_id_fkey FOREIGN KEY (worker_id)
    REFERENCES public.workers(id) ON DELETE SET NULL;
ALTER TABLE public.tasks ADD CONSTRAINT tasks_task_type_fkey FOREIGN KEY (task_type)
    REFERENCES public.task_types(name);

-- Indexes (final set; file that last (re)created each one)
CREATE INDEX idx_status_created  ON public.tasks USING btree (status, created_at);   -- 20250100000000 @94ce8b8c
CREATE INDEX idx_project_status  ON public.tasks USING btree (project_id, status);   -- 20250100000000 @94ce8b8c
-- (idx_dependant_on from the base schema was dropped by 20260121000000 @138e0957)
CREATE INDEX idx_tasks_created_at ON public.tasks (created_at DESC);                 -- 20250710000002_add_task_polling_indexes.sql @47a879589af56a60148a124715828e4837306053
CREATE INDEX idx_tasks_worker_id  ON public.tasks (worker_id);                       -- 20250705000001 @16e6b40d
CREATE INDEX idx_tasks_task_type  ON public.tasks (task_type)
    WHERE task_type IN ('travel_stitch', 'single_image');                            -- 20250127000001_fix_task_processing_trigger.sql @8f192f44a7f78313e6f793070f0fe8624e97e32e
CREATE INDEX idx_tasks_status_worker ON public.tasks (status, worker_id);            -- 20250202000000 @6a811ee3
-- 20250724000002_complete_enum_casting_fixes.sql @ed3d89c8e39e27f4b15e973f0b2ddb62872ae7d9 :
CREATE INDEX idx_tasks_queued_created  ON public.tasks (created_at) WHERE status = 'Queued'::task_status;
CREATE INDEX idx_tasks_running_started ON public.tasks (generation_started_at) WHERE status = 'In Progress'::task_status;
CREATE INDEX idx_tasks_poll_travel_stitch ON public.tasks (task_type, status)
    WHERE generation_processed_at IS NULL AND task_type = 'travel_stitch' AND status = 'Complete'::task_status;
CREATE INDEX idx_tasks_poll_single_image ON public.tasks (task_type, status)
    WHERE generation_processed_at IS NULL AND task_type = 'single_image' AND status = 'Complete'::task_status;
CREATE INDEX idx_tasks_active_status ON public.tasks (status, project_id)
    WHERE status NOT IN ('Complete'::task_status, 'Failed'::task_status, 'Cancelled'::task_status);
CREATE INDEX idx_tasks_status_generation_created ON public.tasks (status, generation_created)
    WHERE status = 'Complete'::task_status AND generation_created = false;
-- 20250131000100_optimize_claim_next_task.sql @c837902b18d42199773ebfc9cfdd3c7de6057166 :
CREATE INDEX idx_tasks_status_created_at ON public.tasks (status, created_at);
CREATE INDEX idx_tasks_project_status_inprogress ON public.tasks (project_id, status) WHERE status = 'In Progress';
-- 20260121000000_support_multiple_dependencies.sql @138e09579c2a0ed378138d2f2092769d1690efd8 :
CREATE INDEX idx_tasks_dependant_on ON public.tasks USING GIN (dependant_on) WHERE dependant_on IS NOT NULL;
-- 20260213200001_task_idempotency_key.sql @03ede6467b917a1f43e4913c14743532574a671b :
CREATE UNIQUE INDEX idx_tasks_idempotency_key ON public.tasks (idempotency_key) WHERE idempotency_key IS NOT NULL;

-- RLS: 20250113000003_protect_timing_fields.sql @94ce8b8cc23e17fcba97fc43501a35ebe912d5c6
--      + "Allow viewing own project tasks": 20250910220009_remove_claim_function_security_definer_and_fix_rls.sql
--        @a26b48ac6126b862c72c72328870f21064e4e6f2 (its two sibling policies were dropped by
--        20260312070500_restrict_cross_user_task_claim_rls.sql @b379b8d437fc9c2ba8e590aa0518956a3345ad60)
ALTER TABLE public.tasks ENABLE ROW LEVEL SECURITY;
CREATE POLICY "Users can view their own tasks" ON public.tasks FOR SELECT
  USING (auth.uid() = (SELECT p.user_id FROM projects p WHERE p.id = tasks.project_id));
CREATE POLICY "Users can create tasks" ON public.tasks FOR INSERT
  WITH CHECK (auth.uid() = (SELECT p.user_id FROM projects p WHERE p.id = tasks.project_id));
CREATE POLICY "Users can update their own tasks (no timing)" ON public.tasks FOR UPDATE
  USING (auth.uid() = (SELECT p.user_id FROM projects p WHERE p.id = tasks.project_id));
CREATE POLICY "Service role can manage all tasks" ON public.tasks FOR ALL TO service_role
  USING (true) WITH CHECK (true);
CREATE POLICY "Allow viewing own project tasks" ON public.tasks FOR SELECT TO authenticated
  USING (project_id IN (SELECT p.id FROM projects p WHERE p.user_id = auth.uid()));

-- Other triggers on tasks in the final state, NOT reproduced (app billing only):
--   trigger_bill_cancelled_orchestrator AFTER UPDATE OF status ON tasks
--   (20260112140000_add_orchestrator_cancel_billing_trigger.sql @1a29f4e20c432ce21c502cb005fe1ee5c57c4d09):
--   bills credits when an orchestrator task becomes 'Cancelled'; it never blocks a write.

-- -----------------------------------------------------------------------------
-- 6. Timing trigger
--    Function: final body = 20250910220011_remove_all_remaining_security_definers.sql
--      @32367a9f1398972e38a8732b90074dc94b8c294a (same body as the original, but
--      SECURITY DEFINER removed).
--    Trigger:  20250113000003_protect_timing_fields.sql @94ce8b8cc23e17fcba97fc43501a35ebe912d5c6
--    BEFORE UPDATE only: INSERTs may set the timing columns freely.
-- -----------------------------------------------------------------------------
CREATE FUNCTION public.prevent_timing_manipulation()
RETURNS TRIGGER
LANGUAGE plpgsql
-- REMOVED SECURITY DEFINER
AS $$
BEGIN
  -- Allow if called by service role
  IF auth.role() = 'service_role' THEN
    RETURN NEW;
  END IF;
  
  -- Allow if this is from a system function (claim/complete)
  IF current_setting('application_name', true) IN ('claim_task', 'complete_task') THEN
    RETURN NEW;
  END IF;
  
  -- Block direct timing changes by users
  IF TG_OP = 'UPDATE' AND (
    OLD.generation_started_at IS DISTINCT FROM NEW.generation_started_at OR
    OLD.generation_processed_at IS DISTINCT FROM NEW.generation_processed_at
  ) THEN
    RAISE EXCEPTION 'Timing fields can only be modified by system functions';
  END IF;
  
  RETURN NEW;
END;
$$;
COMMENT ON FUNCTION public.prevent_timing_manipulation IS
'Removed SECURITY DEFINER - now runs with caller privileges';

CREATE TRIGGER prevent_timing_manipulation_trigger
  BEFORE UPDATE ON public.tasks
  FOR EACH ROW
  EXECUTE FUNCTION public.prevent_timing_manipulation();

-- -----------------------------------------------------------------------------
-- 7. system_logs
--    reigh-app 20250115100000_create_system_logs.sql @3ea7da26aba00ddae7345e6266ea482f8a20fe04
--    + valid_source_type widened: 20251208000000 @b9e8199f, 20251220000000 @78450f1d,
--      final = 20251221000000_add_dev_agent_source_type.sql @287053db09b3de3eb2d531648a50849ff150fb3f
--    + RLS on, SELECT/INSERT revoked from anon/authenticated:
--      20260121200000_restrict_system_logs_to_service_role.sql @93506b06bee13d8143055db75f4e1c116e84ec44
--    No policies => only the owner / BYPASSRLS roles see rows. Workers write via
--    the SECURITY DEFINER heartbeat function (runs as the owner).
--    No FK from task_id/worker_id. Views v_recent_errors / v_worker_log_activity
--    and func_insert_logs_batch / func_cleanup_old_logs are not reproduced.
-- -----------------------------------------------------------------------------
CREATE TABLE public.system_logs (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    timestamp    timestamptz NOT NULL DEFAULT NOW(),
    source_type  text NOT NULL,
    source_id    text NOT NULL,
    log_level    text NOT NULL,
    message      text NOT NULL,
    task_id      uuid,
    worker_id    text,
    cycle_number int,
    metadata     jsonb DEFAULT '{}'::jsonb,
    CONSTRAINT valid_log_level CHECK (log_level IN ('DEBUG', 'INFO', 'WARNING', 'ERROR', 'CRITICAL'))
);
ALTER TABLE public.system_logs ADD CONSTRAINT valid_source_type CHECK (source_type IN (
  'orchestrator_gpu', 'orchestrator_api', 'worker', 'edge_function', 'browser', 'dev_agent'));
COMMENT ON COLUMN public.system_logs.source_type IS 'Type of source: orchestrator_gpu, orchestrator_api, worker, edge_function, browser, or dev_agent';
CREATE INDEX idx_system_logs_timestamp ON public.system_logs (timestamp DESC);
CREATE INDEX idx_system_logs_source ON public.system_logs (source_type, source_id, timestamp DESC);
CREATE INDEX idx_system_logs_task ON public.system_logs (task_id, timestamp DESC) WHERE task_id IS NOT NULL;
CREATE INDEX idx_system_logs_worker ON public.system_logs (worker_id, timestamp DESC) WHERE worker_id IS NOT NULL;
CREATE INDEX idx_system_logs_level ON public.system_logs (log_level, timestamp DESC);
CREATE INDEX idx_system_logs_cycle ON public.system_logs (source_type, cycle_number) WHERE cycle_number IS NOT NULL;
ALTER TABLE public.system_logs ENABLE ROW LEVEL SECURITY;
REVOKE SELECT, INSERT ON public.system_logs FROM authenticated, anon;
GRANT SELECT, INSERT ON public.system_logs TO service_role;

-- =============================================================================
-- 8. Helper functions used by the claim / count functions
-- =============================================================================

-- get_task_run_type: final = 20250912001000_enforce_eligibility_in_count_functions.sql
--   @4df7e85a79d6dcff612b8ec42ba12e15d42a71d1 (falls back to 'gpu' for unknown/inactive types).
CREATE FUNCTION public.get_task_run_type(p_task_type TEXT)
RETURNS TEXT
LANGUAGE plpgsql
AS $$
DECLARE
    run_type_result text;
BEGIN
    SELECT run_type INTO run_type_result
    FROM task_types
    WHERE name = p_task_type AND is_active = true;
    
    -- Use 'gpu' as fallback for consistency with claim functions
    RETURN COALESCE(run_type_result, 'gpu');
END;
$$;

-- get_task_model: 20251222000000_add_worker_model_affinity.sql @71a7dbfce79e266eefeb93182e65c1bfe69380ba
CREATE FUNCTION public.get_task_model(p_params JSONB)
RETURNS TEXT
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
  RETURN COALESCE(
    p_params->>'model_name',
    p_params->'orchestrator_details'->>'model_name',
    p_params->>'model',
    NULL
  );
END;
$$;

-- all_dependencies_complete: 20260121000000_support_multiple_dependencies.sql @138e09579c2a0ed378138d2f2092769d1690efd8
CREATE FUNCTION public.all_dependencies_complete(p_dependant_on uuid[])
RETURNS BOOLEAN
LANGUAGE sql
STABLE
AS $$
  SELECT
    p_dependant_on IS NULL
    OR CARDINALITY(p_dependant_on) = 0
    OR NOT EXISTS (
      SELECT 1
      FROM unnest(p_dependant_on) AS dep_id
      WHERE NOT EXISTS (
        SELECT 1
        FROM tasks dep
        WHERE dep.id = dep_id
        AND dep.status = 'Complete'::task_status
      )
    )
$$;

-- cascade_task_failure: 20260331040000_add_cascade_failure_rpc.sql @627bfaec718c0d4f5a44e74387bd3a32c694387b
--   (called by the heartbeat's crash path). No explicit grants in the migration.
CREATE FUNCTION public.cascade_task_failure(
  p_orchestrator_task_id uuid,
  p_failed_task_id uuid,
  p_failure_status text,
  p_is_orchestrator_task boolean
)
RETURNS SETOF uuid
LANGUAGE sql
SECURITY DEFINER
SET search_path = public
AS $$
  update tasks
  set
    status = p_failure_status::task_status,
    updated_at = now(),
    error_message = 'Cascaded ' || lower(p_failure_status) || ' from related task ' || p_failed_task_id::text
  where
    id <> p_failed_task_id
    and status not in ('Complete', 'Failed', 'Cancelled')
    and (
      (not p_is_orchestrator_task and id = p_orchestrator_task_id)
      or params->>'orchestrator_task_id_ref' = p_orchestrator_task_id::text
      or params->'orchestration_contract'->>'orchestrator_task_id' = p_orchestrator_task_id::text
      or params->>'orchestrator_task_id' = p_orchestrator_task_id::text
      or params->'orchestrator_details'->>'orchestrator_task_id' = p_orchestrator_task_id::text
      or params->'originalParams'->'orchestrator_details'->>'orchestrator_task_id' = p_orchestrator_task_id::text
    )
  returning id;
$$;

-- =============================================================================
-- 9. Legacy worker-facing functions (old orchestrator / Headless-Wan2GP era)
--    NOTE: func_claim_task(text,text) and func_claim_user_task(text,text,uuid) do
--    NOT exist in the final state: dropped by
--    20250723182832_cleanup_duplicate_functions.sql @f972f8c64066bbcdb278948a3081ee4f8c11372e
--    (the old orchestrator's sql/20250202000003_add_legacy_functions.sql wrapper
--    was never a reigh-app migration).
-- =============================================================================

-- func_claim_available_task(text): final = 20250724000001_fix_edge_functions_enum_casting.sql
--   @9a7f2bc6a9b95960617ef7021b68a09fc609a5c6. SECURITY INVOKER, no search_path.
--   Claims the oldest Queued task of ANY task_type/run_type, ignores dependencies,
--   credits and per-user caps. Checks a 'terminating' worker status that the
--   workers CHECK forbids. Sets generation_started_at => passes the timing trigger
--   only when auth.role()='service_role' (JWT claim) or application_name is
--   'claim_task'/'complete_task'. Grants: Supabase defaults only (+ PUBLIC).
CREATE FUNCTION public.func_claim_available_task(worker_id_param text)
RETURNS TABLE(
    id uuid,
    status text,
    attempts int,
    worker_id text,
    generation_started_at timestamptz,
    task_data jsonb,
    created_at timestamptz,
    task_type text
) 
LANGUAGE plpgsql
AS $$
BEGIN
    -- First check if worker is marked for termination
    IF EXISTS (SELECT 1 FROM workers w WHERE w.id = worker_id_param AND w.status = 'terminating') THEN
        RETURN; -- Don't assign new tasks to terminating workers
    END IF;
    
    -- Atomically claim the oldest queued task
    RETURN QUERY
    UPDATE tasks 
    SET 
        status = 'In Progress'::task_status,  -- Cast to enum
        worker_id = worker_id_param,
        generation_started_at = NOW()
    WHERE tasks.id = (
        SELECT t.id FROM tasks t
        WHERE t.status = 'Queued'::task_status  -- Cast to enum
          AND (t.worker_id IS NULL OR t.worker_id = '')
        ORDER BY t.created_at ASC
        LIMIT 1
        FOR UPDATE SKIP LOCKED
    )
    RETURNING 
        tasks.id,
        tasks.status::text,  -- Cast back to text for compatibility
        COALESCE(tasks.attempts, 0),
        tasks.worker_id,
        tasks.generation_started_at,
        tasks.params as task_data,
        tasks.created_at,
        tasks.task_type;
END;
$$;
COMMENT ON FUNCTION public.func_claim_available_task(text) IS 'Primary function for workers to claim tasks from the queue. Replaces func_claim_task and func_claim_user_task.';

-- func_mark_task_complete(uuid, jsonb): final = 20250724000001 @9a7f2bc6a9b95960617ef7021b68a09fc609a5c6.
--   Returns void; does NOT touch worker_id or output_location. Sets generation_processed_at
--   (timing trigger applies, see above).
CREATE FUNCTION public.func_mark_task_complete(task_id_param uuid, result_data_param jsonb DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
    UPDATE tasks
    SET 
        status = 'Complete'::task_status,  -- Cast to enum
        generation_processed_at = NOW(),
        result_data = COALESCE(result_data_param, result_data),
        updated_at = NOW()
    WHERE id = task_id_param;
END;
$$;
COMMENT ON FUNCTION public.func_mark_task_complete(uuid, jsonb) IS 'Primary function to mark a task as completed with results. Replaces complete_task_with_timing.';

-- func_mark_task_failed(uuid, text): final = 20250202000001_create_rpc_functions_existing.sql
--   @6a811ee3bd97cdbc2f51394d94fc3f645f7c8416 (never redefined). BROKEN in the final
--   schema: the CASE yields text ('Failed'/'Error') assigned to an enum column and
--   'Error' is not an enum value => every call raises (verified on this fixture).
CREATE FUNCTION public.func_mark_task_failed(task_id_param uuid, error_message_param text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
    UPDATE tasks
    SET 
        attempts = COALESCE(attempts, 0) + 1,
        status = CASE WHEN COALESCE(attempts, 0) + 1 >= 3 THEN 'Failed' ELSE 'Error' END,
        generation_processed_at = NOW(),
        error_message = error_message_param,
        worker_id = NULL,  -- Clear worker assignment for retry
        updated_at = NOW()
    WHERE id = task_id_param;
END;
$$;
COMMENT ON FUNCTION public.func_mark_task_failed(uuid, text) IS 'Primary function to mark a task as failed with error message.';

-- func_mark_task_failed(text, text): final = 20250724000001 @9a7f2bc6a9b95960617ef7021b68a09fc609a5c6,
--   grants 20250724000000_update_task_functions.sql @387119139906a5c39ac2f81ac6f2017473c91f0d,
--   anon revoked by 20251212000001_security_hardening.sql @73f9c689dc476163040ff63d330b214e8fcee577.
--   SECURITY DEFINER (bypasses RLS; owner is superuser here, so also the timing
--   trigger is evaluated with the CALLER's JWT claims, not bypassed). Terminal 'Failed',
--   no retry, no attempts++, keeps worker_id.
CREATE FUNCTION public.func_mark_task_failed(
    p_task_id TEXT,
    p_error_message TEXT
)
RETURNS BOOLEAN AS $$
DECLARE
    rows_updated INTEGER;
    task_uuid UUID;
BEGIN
    -- Convert TEXT task_id to UUID for compatibility
    BEGIN
        task_uuid := p_task_id::UUID;
    EXCEPTION WHEN invalid_text_representation THEN
        RAISE EXCEPTION 'Invalid task_id format: %', p_task_id;
    END;

    -- Mark the task as failed with error message
    UPDATE tasks
    SET
        status = 'Failed'::task_status,  -- Cast to enum type
        error_message = p_error_message,
        updated_at = CURRENT_TIMESTAMP,
        generation_processed_at = CURRENT_TIMESTAMP
    WHERE id = task_uuid;
    
    GET DIAGNOSTICS rows_updated = ROW_COUNT;
    
    RETURN rows_updated > 0;
END;
$$ LANGUAGE plpgsql SECURITY DEFINER;
GRANT EXECUTE ON FUNCTION public.func_mark_task_failed(TEXT, TEXT) TO authenticated;
GRANT EXECUTE ON FUNCTION public.func_mark_task_failed(TEXT, TEXT) TO service_role;
REVOKE EXECUTE ON FUNCTION public.func_mark_task_failed(TEXT, TEXT) FROM anon;

-- func_reset_orphaned_tasks(text[]): 20250202000001_create_rpc_functions_existing.sql
--   @6a811ee3bd97cdbc2f51394d94fc3f645f7c8416 (never redefined). Requeues In Progress
--   tasks of the given workers with attempts < 3 (does NOT increment attempts).
CREATE FUNCTION public.func_reset_orphaned_tasks(failed_worker_ids text[])
RETURNS int
LANGUAGE plpgsql
AS $$
DECLARE
    reset_count int;
BEGIN
    UPDATE tasks
    SET 
        status = 'Queued',
        worker_id = NULL,
        generation_started_at = NULL,
        updated_at = NOW()
    WHERE 
        worker_id = ANY(failed_worker_ids)
        AND status = 'In Progress'
        AND COALESCE(attempts, 0) < 3;  -- Don't retry tasks that have already failed too many times
    
    GET DIAGNOSTICS reset_count = ROW_COUNT;
    RETURN reset_count;
END;
$$;
COMMENT ON FUNCTION public.func_reset_orphaned_tasks(text[]) IS 'Reset tasks from failed workers back to Queued status';

-- func_update_worker_heartbeat(text,int,int): final = 20251018000001_fix_heartbeat_function_security.sql
--   @b9fd3495c6356c32cab4268aee54e1f5dcc8cd6e; grants final =
--   20260311110000_restrict_worker_heartbeat_rpc_grants.sql @2c47f5591b2e1a071a8c3442cfd64a4242bac16e
CREATE FUNCTION public.func_update_worker_heartbeat(
    worker_id_param text,
    vram_total_mb_param int DEFAULT NULL,
    vram_used_mb_param int DEFAULT NULL
)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER  -- Run with function owner's privileges (bypasses RLS)
SET search_path = public  -- Security best practice with SECURITY DEFINER
AS $$
DECLARE
    current_metadata jsonb;
BEGIN
    -- Get current metadata or initialize empty
    SELECT COALESCE(metadata, '{}'::jsonb) INTO current_metadata 
    FROM workers WHERE id = worker_id_param;
    
    -- Update metadata with VRAM info if provided
    IF vram_total_mb_param IS NOT NULL THEN
        current_metadata = current_metadata || 
            jsonb_build_object(
                'vram_total_mb', vram_total_mb_param,
                'vram_used_mb', COALESCE(vram_used_mb_param, 0),
                'vram_timestamp', extract(epoch from NOW())
            );
    END IF;
    
    -- Update heartbeat and metadata
    UPDATE workers
    SET 
        last_heartbeat = NOW(),
        metadata = current_metadata
    WHERE id = worker_id_param;
    
    -- If worker doesn't exist, create it as external worker
    IF NOT FOUND THEN
        INSERT INTO workers (id, instance_type, status, last_heartbeat, metadata, created_at)
        VALUES (
            worker_id_param, 
            'external', 
            'active', 
            NOW(), 
            current_metadata,
            NOW()
        );
    END IF;
END;
$$;
REVOKE EXECUTE ON FUNCTION public.func_update_worker_heartbeat(text, int, int) FROM authenticated, anon;
GRANT EXECUTE ON FUNCTION public.func_update_worker_heartbeat(text, int, int) TO service_role;
COMMENT ON FUNCTION public.func_update_worker_heartbeat(text, int, int)
IS 'Update worker heartbeat and VRAM usage. Uses SECURITY DEFINER to bypass RLS on workers table. Service-role only.';

-- func_worker_heartbeat_with_logs, 5-arg overload (no status): final =
--   20251018000001_fix_heartbeat_function_security.sql @b9fd3495c6356c32cab4268aee54e1f5dcc8cd6e;
--   grants final = 20260311110000 @2c47f5591b2e1a071a8c3442cfd64a4242bac16e.
--   Still present next to the 6-arg overload (CREATE OR REPLACE with a new
--   parameter list adds an overload); a call giving only the first 4 (or 5)
--   arguments is ambiguous.
CREATE FUNCTION public.func_worker_heartbeat_with_logs(
    worker_id_param text,
    vram_total_mb_param int DEFAULT NULL,
    vram_used_mb_param int DEFAULT NULL,
    logs_param jsonb DEFAULT '[]'::jsonb,
    current_task_id_param uuid DEFAULT NULL
)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER  -- Run with function owner's privileges (bypasses RLS)
SET search_path = public  -- Security best practice with SECURITY DEFINER
AS $$
DECLARE
    current_metadata jsonb;
    log_entry jsonb;
    inserted_count int := 0;
    error_count int := 0;
BEGIN
    -- 1. Update worker heartbeat (existing functionality)
    SELECT COALESCE(metadata, '{}'::jsonb) INTO current_metadata 
    FROM workers WHERE id = worker_id_param;
    
    -- Add VRAM metrics if provided
    IF vram_total_mb_param IS NOT NULL THEN
        current_metadata = current_metadata || 
            jsonb_build_object(
                'vram_total_mb', vram_total_mb_param,
                'vram_used_mb', COALESCE(vram_used_mb_param, 0),
                'vram_timestamp', extract(epoch from NOW())
            );
    END IF;
    
    -- Update heartbeat timestamp and metadata
    UPDATE workers
    SET 
        last_heartbeat = NOW(),
        metadata = current_metadata
    WHERE id = worker_id_param;
    
    -- If worker doesn't exist, create it as external worker
    IF NOT FOUND THEN
        INSERT INTO workers (id, instance_type, status, last_heartbeat, metadata, created_at)
        VALUES (
            worker_id_param, 
            'external', 
            'active', 
            NOW(), 
            current_metadata,
            NOW()
        );
    END IF;
    
    -- 2. Insert log entries in batch
    IF jsonb_array_length(logs_param) > 0 THEN
        FOR log_entry IN SELECT * FROM jsonb_array_elements(logs_param)
        LOOP
            BEGIN
                INSERT INTO system_logs (
                    timestamp,
                    source_type,
                    source_id,
                    log_level,
                    message,
                    task_id,
                    worker_id,
                    metadata
                ) VALUES (
                    COALESCE((log_entry->>'timestamp')::timestamptz, NOW()),
                    'worker',
                    worker_id_param,
                    COALESCE(log_entry->>'level', 'INFO'),
                    log_entry->>'message',
                    COALESCE((log_entry->>'task_id')::uuid, current_task_id_param),
                    worker_id_param,
                    COALESCE(log_entry->'metadata', '{}'::jsonb)
                );
                inserted_count := inserted_count + 1;
            EXCEPTION WHEN OTHERS THEN
                error_count := error_count + 1;
                -- Continue with other entries
            END;
        END LOOP;
    END IF;
    
    RETURN jsonb_build_object(
        'success', true,
        'heartbeat_updated', true,
        'logs_inserted', inserted_count,
        'log_errors', error_count
    );
END;
$$;
REVOKE EXECUTE ON FUNCTION public.func_worker_heartbeat_with_logs(text, int, int, jsonb, uuid) FROM authenticated, anon;
GRANT EXECUTE ON FUNCTION public.func_worker_heartbeat_with_logs(text, int, int, jsonb, uuid) TO service_role;
COMMENT ON FUNCTION public.func_worker_heartbeat_with_logs(text, int, int, jsonb, uuid)
IS 'Enhanced heartbeat with logs. Uses SECURITY DEFINER to bypass RLS on workers table. Service-role only.';

-- func_worker_heartbeat_with_logs, 6-arg overload (status_param): final =
--   20260331060000_add_crash_recovery_to_heartbeat.sql @caa3a50ded5295487e3fe4ccf319d32a125abc15;
--   grants: GRANT to authenticated, anon, service_role in 20251019000001 @b9fd3495;
--   REVOKE from authenticated, anon in 20260121200000 @93506b06 and 20260311110000 @2c47f559;
--   GRANT service_role in 20260331060000 @caa3a50d.
--   This is the one Headless-Wan2GP's heartbeat_guardian.py calls (it always sends status_param).
--   It writes workers.status = status_param verbatim: 'crashed' violates workers_status_check.
CREATE FUNCTION public.func_worker_heartbeat_with_logs(
    worker_id_param text,
    vram_total_mb_param int DEFAULT NULL,
    vram_used_mb_param int DEFAULT NULL,
    logs_param jsonb DEFAULT '[]'::jsonb,
    current_task_id_param uuid DEFAULT NULL,
    status_param text DEFAULT 'active'
)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = public
AS $$
DECLARE
    current_metadata jsonb;
    log_entry jsonb;
    inserted_count int := 0;
    error_count int := 0;
    requeued_count int := 0;
    failed_count int := 0;
    failed_task record;
    orchestrator_task_id_text text;
    is_orchestrator_task boolean;
BEGIN
    -- 1. Update worker heartbeat, metadata, and status
    SELECT COALESCE(metadata, '{}'::jsonb) INTO current_metadata
    FROM workers WHERE id = worker_id_param;

    IF vram_total_mb_param IS NOT NULL THEN
        current_metadata = current_metadata ||
            jsonb_build_object(
                'vram_total_mb', vram_total_mb_param,
                'vram_used_mb', COALESCE(vram_used_mb_param, 0),
                'vram_timestamp', extract(epoch from NOW())
            );
    END IF;

    UPDATE workers
    SET
        last_heartbeat = NOW(),
        metadata = current_metadata,
        status = status_param
    WHERE id = worker_id_param;

    IF NOT FOUND THEN
        INSERT INTO workers (id, instance_type, status, last_heartbeat, metadata, created_at)
        VALUES (
            worker_id_param,
            'external',
            status_param,
            NOW(),
            current_metadata,
            NOW()
        );
    END IF;

    -- 2. Crash recovery for tasks stranded on a dead worker
    IF status_param = 'crashed' THEN
        UPDATE tasks
        SET
            status = 'Queued'::task_status,
            worker_id = NULL,
            generation_started_at = NULL,
            attempts = COALESCE(attempts, 0) + 1,
            updated_at = NOW(),
            error_message = 'Requeued: worker crashed (attempt ' || (COALESCE(attempts, 0) + 1)::text || ')'
        WHERE worker_id = worker_id_param
          AND status = 'In Progress'::task_status
          AND COALESCE(attempts, 0) < 3;

        GET DIAGNOSTICS requeued_count = ROW_COUNT;

        FOR failed_task IN
            UPDATE tasks
            SET
                status = 'Failed'::task_status,
                worker_id = NULL,
                generation_started_at = NULL,
                updated_at = NOW(),
                error_message = 'Failed: worker crashed after exhausting retries (attempt ' || COALESCE(attempts, 0)::text || ')'
            WHERE worker_id = worker_id_param
              AND status = 'In Progress'::task_status
              AND COALESCE(attempts, 0) >= 3
            RETURNING id, params, task_type
        LOOP
            failed_count := failed_count + 1;

            is_orchestrator_task := COALESCE(failed_task.task_type, '') ILIKE '%orchestrator%';
            orchestrator_task_id_text := CASE
                WHEN is_orchestrator_task THEN failed_task.id::text
                ELSE COALESCE(
                    failed_task.params->>'orchestrator_task_id_ref',
                    failed_task.params->'orchestration_contract'->>'orchestrator_task_id',
                    failed_task.params->>'orchestrator_task_id',
                    failed_task.params->'orchestrator_details'->>'orchestrator_task_id'
                )
            END;

            IF orchestrator_task_id_text IS NOT NULL
               AND orchestrator_task_id_text ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
            THEN
                PERFORM cascade_task_failure(
                    orchestrator_task_id_text::uuid,
                    failed_task.id,
                    'Failed',
                    is_orchestrator_task
                );
            END IF;
        END LOOP;
    END IF;

    -- 3. Insert log entries in batch
    IF jsonb_array_length(logs_param) > 0 THEN
        FOR log_entry IN SELECT * FROM jsonb_array_elements(logs_param)
        LOOP
            BEGIN
                INSERT INTO system_logs (
                    timestamp,
                    source_type,
                    source_id,
                    log_level,
                    message,
                    task_id,
                    worker_id,
                    metadata
                ) VALUES (
                    COALESCE((log_entry->>'timestamp')::timestamptz, NOW()),
                    'worker',
                    worker_id_param,
                    COALESCE(log_entry->>'level', 'INFO'),
                    log_entry->>'message',
                    COALESCE((log_entry->>'task_id')::uuid, current_task_id_param),
                    worker_id_param,
                    COALESCE(log_entry->'metadata', '{}'::jsonb)
                );
                inserted_count := inserted_count + 1;
            EXCEPTION WHEN OTHERS THEN
                error_count := error_count + 1;
            END;
        END LOOP;
    END IF;

    RETURN jsonb_build_object(
        'success', true,
        'heartbeat_updated', true,
        'logs_inserted', inserted_count,
        'log_errors', error_count,
        'crash_requeued_tasks', requeued_count,
        'crash_failed_tasks', failed_count
    );
END;
$$;
REVOKE EXECUTE ON FUNCTION public.func_worker_heartbeat_with_logs(text, int, int, jsonb, uuid, text) FROM authenticated, anon;
GRANT EXECUTE ON FUNCTION public.func_worker_heartbeat_with_logs(text, int, int, jsonb, uuid, text) TO service_role;
COMMENT ON FUNCTION public.func_worker_heartbeat_with_logs(text, int, int, jsonb, uuid, text)
IS 'Enhanced heartbeat with logs, worker status updates, and crash recovery. Uses SECURITY DEFINER to bypass RLS on workers table. Service-role only.';

-- =============================================================================
-- 10. What the app actually hands out (edge function claim-next-task, service key)
-- =============================================================================

-- claim_next_task_service_role(text, boolean, text, boolean, int): final =
--   20260323213000_add_max_task_wait_to_claim.sql @6399dfaadfd019c91bcc51c59b436720b2d16e7b.
--   Called by supabase/functions/claim-next-task/index.ts @6399dfaadfd019c91bcc51c59b436720b2d16e7b
--   with {p_worker_id, p_include_active:false, p_run_type, p_same_model_only, p_max_task_wait_minutes}.
--   SECURITY DEFINER, NO search_path. Creates TEMP TABLE _eligible_users ON COMMIT DROP,
--   so it can run only once per transaction. No FOR UPDATE SKIP LOCKED.
--   A 3-arg overload claim_next_task_service_role(text, boolean, text) from
--   20260121170000_fix_claim_preserve_generation_started_at.sql @2815c4767aba8cf55f9dbed5947f5babd8a24410
--   also survives in the final state; it is NOT reproduced here (not called by any
--   legacy component; its presence makes 1-3 argument calls ambiguous).
CREATE FUNCTION public.claim_next_task_service_role(
  p_worker_id TEXT,
  p_include_active BOOLEAN DEFAULT FALSE,
  p_run_type TEXT DEFAULT NULL,
  p_same_model_only BOOLEAN DEFAULT FALSE,
  p_max_task_wait_minutes INT DEFAULT 5
)
RETURNS TABLE(
  task_id UUID,
  params JSONB,
  task_type TEXT,
  project_id UUID,
  user_id UUID
)
LANGUAGE plpgsql
SECURITY DEFINER
AS $$
DECLARE
  v_task_id UUID;
  v_params JSONB;
  v_task_type TEXT;
  v_project_id UUID;
  v_user_id UUID;
  v_status_filter task_status[];
  v_worker_model TEXT;
  v_has_starving_task BOOLEAN := FALSE;
  v_no_matching_tasks BOOLEAN := FALSE;
  v_effective_max_task_wait_minutes INT := COALESCE(p_max_task_wait_minutes, 5);
BEGIN
  IF p_include_active THEN
    v_status_filter := ARRAY['Queued'::task_status, 'In Progress'::task_status];
  ELSE
    v_status_filter := ARRAY['Queued'::task_status];
  END IF;

  SELECT current_model INTO v_worker_model
  FROM workers
  WHERE id = p_worker_id AND status = 'active';

  CREATE TEMP TABLE _eligible_users ON COMMIT DROP AS
    SELECT
      u.id as user_id,
      u.credits,
      COALESCE((u.settings->'ui'->'generationMethods'->>'inCloud')::boolean, true) as allows_cloud,
      COUNT(in_progress_tasks.id) as in_progress_count
    FROM users u
    LEFT JOIN projects p ON p.user_id = u.id
    LEFT JOIN tasks in_progress_tasks ON in_progress_tasks.project_id = p.id
      AND in_progress_tasks.status = 'In Progress'::task_status
      AND COALESCE(in_progress_tasks.task_type, '') NOT ILIKE '%orchestrator%'
    WHERE u.credits > 0
      AND COALESCE((u.settings->'ui'->'generationMethods'->>'inCloud')::boolean, true) = true
    GROUP BY u.id, u.credits, u.settings
    HAVING COUNT(in_progress_tasks.id) < 5;

  IF p_same_model_only AND v_worker_model IS NOT NULL THEN
    SELECT
      NOT bool_or(get_task_model(t.params) = v_worker_model),
      bool_or(t.created_at < NOW() - (v_effective_max_task_wait_minutes || ' minutes')::interval)
    INTO v_no_matching_tasks, v_has_starving_task
    FROM tasks t
    JOIN projects p ON t.project_id = p.id
    WHERE t.status = 'Queued'::task_status
      AND all_dependencies_complete(t.dependant_on)
      AND EXISTS (
        SELECT 1 FROM _eligible_users eu WHERE eu.user_id = p.user_id
      )
      AND (
        p_run_type IS NULL OR
        get_task_run_type(t.task_type) = p_run_type
      );

    v_no_matching_tasks := COALESCE(v_no_matching_tasks, TRUE);
    v_has_starving_task := COALESCE(v_has_starving_task, FALSE);
  END IF;

  WITH ready_tasks AS (
    SELECT
      t.id,
      t.params,
      t.task_type,
      t.project_id,
      t.created_at,
      p.user_id,
      ROW_NUMBER() OVER (
        ORDER BY
          CASE
            WHEN v_has_starving_task OR v_no_matching_tasks THEN NULL
            WHEN v_worker_model IS NOT NULL
                 AND get_task_model(t.params) = v_worker_model
            THEN 0
            ELSE 1
          END NULLS LAST,
          t.created_at ASC
      ) as rn
    FROM tasks t
    JOIN projects p ON t.project_id = p.id
    WHERE t.status = 'Queued'::task_status
      AND all_dependencies_complete(t.dependant_on)
      AND EXISTS (
        SELECT 1 FROM _eligible_users eu WHERE eu.user_id = p.user_id
      )
      AND (
        p_run_type IS NULL OR
        get_task_run_type(t.task_type) = p_run_type
      )
      AND (
        v_has_starving_task
        OR v_no_matching_tasks
        OR NOT p_same_model_only
        OR v_worker_model IS NULL
        OR get_task_model(t.params) = v_worker_model
      )
  )
  UPDATE tasks
  SET
    status = CASE
      WHEN status = 'Queued'::task_status THEN 'In Progress'::task_status
      ELSE status
    END,
    worker_id = CASE
      WHEN status = 'Queued'::task_status THEN p_worker_id
      ELSE worker_id
    END,
    updated_at = CASE
      WHEN status = 'Queued'::task_status THEN NOW()
      ELSE updated_at
    END,
    generation_started_at = CASE
      WHEN status = 'Queued'::task_status THEN NOW()
      ELSE generation_started_at
    END
  FROM ready_tasks rt
  WHERE tasks.id = rt.id
    AND rt.rn = 1
    AND (NOT p_include_active OR tasks.status = 'Queued'::task_status)
  RETURNING
    tasks.id,
    tasks.params,
    tasks.task_type,
    tasks.project_id,
    rt.user_id
  INTO v_task_id, v_params, v_task_type, v_project_id, v_user_id;

  IF v_task_id IS NOT NULL THEN
    task_id := v_task_id;
    params := v_params;
    task_type := v_task_type;
    project_id := v_project_id;
    user_id := v_user_id;
    RETURN NEXT;
  END IF;

  RETURN;
END;
$$;
COMMENT ON FUNCTION public.claim_next_task_service_role(TEXT, BOOLEAN, TEXT, BOOLEAN, INT) IS
'Claims next eligible task for service role. Supports multiple dependencies (all must be complete). Prioritizes model affinity until any eligible task exceeds the max wait threshold, then falls back to FIFO. Excludes orchestrators from concurrency limit.';

-- count_eligible_tasks_service_role(boolean, text): final =
--   20260121000000_support_multiple_dependencies.sql @138e09579c2a0ed378138d2f2092769d1690efd8.
--   SECURITY INVOKER (definer removed in 20250910220011 and never restored).
--   Sum over users with credits > 0, inCloud != false, < 5 non-orchestrator tasks
--   In Progress of: include_active ? LEAST(5, running + ready) : GREATEST(0, LEAST(5 - running, ready)).
CREATE FUNCTION public.count_eligible_tasks_service_role(
  p_include_active BOOLEAN DEFAULT FALSE,
  p_run_type TEXT DEFAULT NULL
)
RETURNS INTEGER
LANGUAGE plpgsql
AS $$
DECLARE
  v_total_capacity INTEGER := 0;
BEGIN
  WITH per_user_capacity AS (
    SELECT
      u.id AS user_id,
      u.credits,
      COALESCE((u.settings->'ui'->'generationMethods'->>'inCloud')::boolean, true) AS allows_cloud,
      COUNT(CASE
        WHEN t.status = 'In Progress'
          AND COALESCE(t.task_type, '') NOT ILIKE '%orchestrator%'
        THEN 1
      END) AS in_progress_count,
      COUNT(CASE
        WHEN t.status = 'Queued'
          AND all_dependencies_complete(t.dependant_on)
          AND (
            p_run_type IS NULL
            OR get_task_run_type(t.task_type) = p_run_type
          )
        THEN 1
      END) AS ready_queued_count
    FROM users u
    LEFT JOIN projects p ON p.user_id = u.id
    LEFT JOIN tasks t ON t.project_id = p.id
    WHERE u.credits > 0
      AND COALESCE((u.settings->'ui'->'generationMethods'->>'inCloud')::boolean, true) = true
    GROUP BY u.id, u.credits, u.settings
    HAVING COALESCE(COUNT(CASE
      WHEN t.status = 'In Progress'
        AND COALESCE(t.task_type, '') NOT ILIKE '%orchestrator%'
      THEN 1
    END), 0) < 5
  )
  SELECT COALESCE(SUM(
    CASE
      WHEN p_include_active THEN
        LEAST(5, in_progress_count + ready_queued_count)
      ELSE
        GREATEST(0, LEAST(5 - in_progress_count, ready_queued_count))
    END
  ), 0) INTO v_total_capacity
  FROM per_user_capacity;

  RETURN v_total_capacity;
END;
$$;
COMMENT ON FUNCTION public.count_eligible_tasks_service_role(BOOLEAN, TEXT) IS
'Removed SECURITY DEFINER - now runs with caller privileges';

RESET client_min_messages;
