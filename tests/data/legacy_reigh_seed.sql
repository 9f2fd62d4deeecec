-- =============================================================================
-- legacy_reigh_seed.sql — rows in every legacy state, for legacy_reigh.sql.
-- Load after legacy_reigh.sql, as postgres. Timestamps are relative to now().
--
-- Timing trigger: prevent_timing_manipulation_trigger is BEFORE UPDATE only, and
-- this seed only INSERTs, so it passes without disabling the trigger.
--
-- workers_status_check: the migration CHECK only allows active/inactive/terminated.
-- The legacy code also writes 'spawning', 'error' (old orchestrator) and 'crashed'
-- (worker heartbeat guardian), rows that cannot exist in a DB built from the
-- migrations but that the old code expects (see tests/data/legacy_reigh_findings.md, §g).
-- Section C below inserts such rows by dropping the CHECK, inserting, and adding it
-- back NOT VALID: old rows stay, every NEW write is still checked exactly like the
-- migration's CHECK. (pg_constraint.convalidated is false afterwards; that is the
-- only difference from legacy_reigh.sql.) Skip section C for a migrations-pure DB.
--
-- Easy-to-reference ids:
--   users    ...-000000000001 (100 credits)  ...-000000000002 (0 credits)
--   projects ...-000000000101 / ...-000000000102
--   tasks    aaaaaaaa-0000-4000-8000-0000000000NN
--   workers  gpu-YYYYMMDD_HHMMSS-xxxxxxxx names as the old orchestrator makes them
--            (runpod_client.generate_worker_id: f"gpu-{%Y%m%d_%H%M%S}-{uuid4()[:8]}")
--   pods     legacypod0N (see legacy_reigh_pods.json)
-- =============================================================================

\set ON_ERROR_STOP 1

BEGIN;

-- -----------------------------------------------------------------------------
-- task_types rows used by the seed — real names / run_type / category / billing
-- from reigh-app supabase/migrations (values as the last migration left them).
--   travel_orchestrator, travel_segment, travel_stitch, single_image: copied from
--     task_cost_configs by 20250203200000_create_task_types_with_run_type.sql (all run_type
--     'gpu'), tool_type 20250902140000, content_type 20250927000000, is_visible/
--     supports_progress 20260111100000, variant_type 20260204191820; single_image
--     per_unit 0.025 by 20250203210000. base_cost_per_second values are not used by the
--     GPU pipeline and are illustrative for the copied rows.
--   wan_2_2_i2v: 20250124000001_fix_wan_2_2_i2v_shot_generation_issues.sql
--   qwen_image_style (api): 20250902000001_add_qwen_image_style_task_type.sql
--   qwen_image (api): 20260104000000_add_fal_text_to_image_task_types.sql
--   join_clips_orchestrator: 20250207000001_add_join_clips_orchestrator_task_type.sql
-- NOTE: travel_orchestrator is run_type 'gpu' (category 'orchestration'): the app hands
-- orchestrator tasks to GPU workers; there is no 'orchestrator' run_type.
-- -----------------------------------------------------------------------------
INSERT INTO task_types (name, run_type, category, display_name, description, base_cost_per_second,
                        cost_factors, is_active, billing_type, unit_cost, tool_type, content_type,
                        is_visible, supports_progress, variant_type) VALUES
 ('travel_orchestrator', 'gpu', 'orchestration', 'Travel Between Images',
  'Coordinate complex multi-step travel generation workflows', 0.030000, '{"frameCount": 1}', true,
  'per_second', NULL, 'travel-between-images', 'video', true, true, NULL),
 ('travel_segment', 'gpu', 'processing', 'Video Segment Generation',
  'Generate individual video segments for travel sequences', 0.027800, '{}', true,
  'per_second', NULL, 'travel-between-images', 'video', false, false, 'travel_segment'),
 ('travel_stitch', 'gpu', 'processing', 'Video Generation',
  'Stitch individual video segments into final output', 0.050000, '{}', true,
  'per_second', NULL, 'travel-between-images', 'video', false, false, 'travel_stitch'),
 ('single_image', 'gpu', 'generation', 'Image Generation',
  'Generate individual images using AI models', 0.010000, '{}', true,
  'per_unit', 0.025000, 'image-generation', 'image', false, false, NULL),
 ('wan_2_2_i2v', 'gpu', 'generation', 'WAN 2.2 Image to Video',
  'Image to video generation using WAN 2.2 model', 0.010000, '{}', true,
  'per_second', NULL, 'travel-between-images', NULL, false, false, NULL),
 ('join_clips_orchestrator', 'gpu', 'orchestration', 'Join Clips',
  'Orchestrate multi-clip joining workflow with per-join settings and AI-generated transitions', 0.027800, '{}', true,
  'per_second', 0.000001, 'join-clips', 'video', true, true, NULL),
 ('qwen_image_style', 'api', 'generation', 'Qwen.Image Style Generation',
  'Generate images using Qwen.Image model with style reference guidance', 0.000001, '{}', true,
  'per_unit', 0.030000, 'image-generation', 'image', true, false, NULL),
 ('qwen_image', 'api', 'generation', 'Qwen Image',
  'Generate images using Qwen Image model via fal.ai', 0.000001, '{}', true,
  'per_unit', 0.039000, 'image-generation', 'image', true, false, NULL);

-- -----------------------------------------------------------------------------
-- users / projects (minimal; see legacy_reigh.sql §2)
-- -----------------------------------------------------------------------------
INSERT INTO users (id, name, email, settings, credits) VALUES
 ('00000000-0000-4000-8000-000000000001', 'Legacy Paying User', 'paying@example.invalid',
  '{"ui": {"generationMethods": {"inCloud": true, "onComputer": false}}}', 100.000),
 -- 0 credits: claim_next_task_service_role / count_eligible_tasks_service_role skip this
 -- user's tasks; func_claim_available_task does not.
 ('00000000-0000-4000-8000-000000000002', 'Legacy Broke User', 'broke@example.invalid',
  '{"ui": {"generationMethods": {"inCloud": true}}}', 0.000);

INSERT INTO projects (id, name, user_id, aspect_ratio) VALUES
 ('00000000-0000-4000-8000-000000000101', 'Legacy project', '00000000-0000-4000-8000-000000000001', '16:9'),
 ('00000000-0000-4000-8000-000000000102', 'Broke project',  '00000000-0000-4000-8000-000000000002', '16:9');

-- -----------------------------------------------------------------------------
-- A. workers that the migration CHECK allows
-- -----------------------------------------------------------------------------
INSERT INTO workers (id, instance_type, created_at, last_heartbeat, status, metadata, current_model) VALUES
 -- A1 active GPU worker, fresh heartbeat. What the old orchestrator's
 --    update_worker_status(id,'active',{promoted_to_active_at}) leaves, plus the VRAM keys
 --    merged by the heartbeat. instance_type = RUNPOD_GPU_TYPE display name.
 ('gpu-20260410_100000-a1a1a1a1', 'NVIDIA GeForce RTX 4090',
  now() - interval '3 hours 10 minutes', now() - interval '8 seconds', 'active',
  jsonb_build_object(
    'orchestrator_status', 'active',
    'runpod_id', 'legacypod01',
    'ram_tier', 72,
    'storage_volume', 'Peter',
    'startup_script_launched', true,
    'startup_script_launched_at', to_char((now() - interval '3 hours 8 minutes') at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"'),
    'promoted_to_active_at',      to_char((now() - interval '3 hours 5 minutes') at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"'),
    'vram_total_mb', 24564, 'vram_used_mb', 18210,
    'vram_timestamp', extract(epoch from now() - interval '8 seconds')),
  'wan_2_2_i2v_480p'),

 -- A2 booting worker: exactly what database.create_worker_record() inserts
 --    (status 'inactive', metadata {orchestrator_status:'spawning'}, no runpod_id yet,
 --    last_heartbeat left to its default = NULL since 20260121210000). The pod exists
 --    (legacypod02, name = worker id). Its follow-up update_worker_status(...,'spawning',
 --    {runpod_id,...}) violates workers_status_check, so on a migrations-built DB the
 --    row stays like this (see C1 for the intended state).
 ('gpu-20260410_131500-b2b2b2b2', 'NVIDIA GeForce RTX 4090',
  now() - interval '1 minute', NULL, 'inactive',
  '{"orchestrator_status": "spawning"}', NULL),

 -- A3 terminated GPU worker (old orchestrator _terminate_worker: status + terminated_at).
 --    Pod gone from Runpod.
 ('gpu-20260410_080000-d4d4d4d4', 'NVIDIA GeForce RTX 4090',
  now() - interval '5 hours', now() - interval '2 hours', 'terminated',
  jsonb_build_object(
    'orchestrator_status', 'terminated',
    'runpod_id', 'legacypod04',
    'ram_tier', 60,
    'storage_volume', 'Peter',
    'terminated_at', to_char((now() - interval '2 hours') at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"'),
    'vram_total_mb', 24564, 'vram_used_mb', 0,
    'vram_timestamp', extract(epoch from now() - interval '2 hours')),
  NULL),

 -- A4 active GPU worker whose heartbeat stopped 10 minutes ago while holding a task
 --    (the old orchestrator would _mark_worker_error it: 'Stale heartbeat with active tasks').
 ('gpu-20260410_110000-f6f6f6f6', 'NVIDIA GeForce RTX 4090',
  now() - interval '2 hours', now() - interval '10 minutes', 'active',
  jsonb_build_object(
    'orchestrator_status', 'active',
    'runpod_id', 'legacypod06',
    'vram_total_mb', 24564, 'vram_used_mb', 20001,
    'vram_timestamp', extract(epoch from now() - interval '10 minutes')),
  'wan_2_2_i2v_480p'),

 -- A5 API worker (api_orchestrator/main.py: API_WORKER_ID default 'api-worker-main').
 --    No pod, no heartbeat: the API orchestrator never writes the workers table; a row
 --    must nevertheless exist for tasks.worker_id FK when it claims. instance_type 'api'
 --    is an ASSUMPTION (no legacy code writes this row).
 ('api-worker-main', 'api',
  now() - interval '40 days', NULL, 'active', '{}', NULL),

 -- A6 auto-created external worker, exactly as the heartbeat functions INSERT it on the
 --    FIRST beat of an unknown id: instance_type 'external', status = status_param ('active'),
 --    created_at = last_heartbeat = now(), and metadata NULL (not '{}'): the function SELECTs
 --    COALESCE(metadata,'{}') INTO a variable from a missing row, which leaves it NULL, and
 --    NULL || jsonb_build_object(vram...) is NULL (verified on this fixture). From the second
 --    beat on the row exists, COALESCE gives '{}' and the VRAM keys appear.
 ('local-workstation-1', 'external',
  now() - interval '5 seconds', now() - interval '5 seconds', 'active',
  NULL,
  NULL),

 -- A7 row inserted by the migration itself:
 --    reigh-app 20250724000000_update_task_functions.sql @387119139906a5c39ac2f81ac6f2017473c91f0d
 ('default_worker', 'external',
  now() - interval '260 days', now() - interval '260 days', 'active', '{"is_default": true}', NULL);

-- -----------------------------------------------------------------------------
-- B. tasks (status enum values: Queued, In Progress, Complete, Failed, Cancelled)
--    ids aaaaaaaa-0000-4000-8000-0000000000NN; created_at spaced so FIFO order is clear.
-- -----------------------------------------------------------------------------
INSERT INTO tasks (id, task_type, params, status, dependant_on, output_location, created_at, updated_at,
                   project_id, generation_processed_at, generation_started_at, worker_id,
                   generation_created, attempts, error_message, result_data) VALUES
 -- 01 OLDEST Queued GPU task, no deps, paying user: first for func_claim_available_task
 --    AND for claim_next_task_service_role(run_type 'gpu').
 ('aaaaaaaa-0000-4000-8000-000000000001', 'travel_segment',
  '{"model_name": "wan_2_2_i2v_480p", "segment_index": 0, "orchestrator_task_id_ref": "aaaaaaaa-0000-4000-8000-000000000005"}',
  'Queued', NULL, NULL, now() - interval '9 minutes', NULL,
  '00000000-0000-4000-8000-000000000101', NULL, NULL, NULL, false, 0, NULL, '{}'),
 -- 02 Queued GPU task (single_image), paying user
 ('aaaaaaaa-0000-4000-8000-000000000002', 'single_image',
  '{"model_name": "qwen_image_edit", "prompt": "a lighthouse"}',
  'Queued', NULL, NULL, now() - interval '7 minutes', NULL,
  '00000000-0000-4000-8000-000000000101', NULL, NULL, NULL, false, 0, NULL, '{}'),
 -- 03 Queued API-run_type task (qwen_image_style): filtered out of run_type 'gpu' by the
 --    app's claim/count, but func_claim_available_task would hand it to a GPU worker.
 ('aaaaaaaa-0000-4000-8000-000000000003', 'qwen_image_style',
  '{"prompt": "a cat in the style of the reference"}',
  'Queued', NULL, NULL, now() - interval '8 minutes', NULL,
  '00000000-0000-4000-8000-000000000101', NULL, NULL, NULL, false, 0, NULL, '{}'),
 -- 04 Queued GPU task blocked by an unfinished dependency (travel_stitch after segment 01)
 ('aaaaaaaa-0000-4000-8000-000000000004', 'travel_stitch',
  '{"orchestrator_task_id_ref": "aaaaaaaa-0000-4000-8000-000000000005"}',
  'Queued', ARRAY['aaaaaaaa-0000-4000-8000-000000000001']::uuid[], NULL, now() - interval '6 minutes', NULL,
  '00000000-0000-4000-8000-000000000101', NULL, NULL, NULL, false, 0, NULL, '{}'),
 -- 05 travel_orchestrator In Progress for 3 hours on the active worker A1
 ('aaaaaaaa-0000-4000-8000-000000000005', 'travel_orchestrator',
  '{"orchestrator_details": {"model_name": "wan_2_2_i2v_480p", "num_new_segments_to_generate": 2}}',
  'In Progress', NULL, NULL, now() - interval '3 hours 2 minutes', now() - interval '3 hours',
  '00000000-0000-4000-8000-000000000101', NULL, now() - interval '3 hours', 'gpu-20260410_100000-a1a1a1a1',
  false, 0, NULL, '{}'),
 -- 06 In Progress GPU task held by the active worker A1 (started 2 minutes ago)
 ('aaaaaaaa-0000-4000-8000-000000000006', 'travel_segment',
  '{"model_name": "wan_2_2_i2v_480p", "segment_index": 1, "orchestrator_task_id_ref": "aaaaaaaa-0000-4000-8000-000000000005"}',
  'In Progress', NULL, NULL, now() - interval '12 minutes', now() - interval '2 minutes',
  '00000000-0000-4000-8000-000000000101', NULL, now() - interval '2 minutes', 'gpu-20260410_100000-a1a1a1a1',
  false, 0, NULL, '{}'),
 -- 07 In Progress task held by the heartbeat-lost worker A4, second attempt
 ('aaaaaaaa-0000-4000-8000-000000000007', 'wan_2_2_i2v',
  '{"model_name": "wan_2_2_i2v_480p"}',
  'In Progress', NULL, NULL, now() - interval '40 minutes', now() - interval '25 minutes',
  '00000000-0000-4000-8000-000000000101', NULL, now() - interval '25 minutes', 'gpu-20260410_110000-f6f6f6f6',
  false, 1, 'Requeued: worker crashed (attempt 1)', '{}'),
 -- 08 Complete (output_location set by the complete_task edge function)
 ('aaaaaaaa-0000-4000-8000-000000000008', 'single_image',
  '{"prompt": "done"}',
  'Complete', NULL, 'https://example.invalid/storage/v1/object/public/image_uploads/done.png',
  now() - interval '2 hours', now() - interval '110 minutes',
  '00000000-0000-4000-8000-000000000101', now() - interval '110 minutes', now() - interval '115 minutes',
  'gpu-20260410_100000-a1a1a1a1', true, 0, NULL, '{}'),
 -- 09 Failed after 3 attempts (dead letter)
 ('aaaaaaaa-0000-4000-8000-000000000009', 'travel_segment',
  '{"model_name": "wan_2_2_i2v_480p", "segment_index": 7}',
  'Failed', NULL, NULL, now() - interval '4 hours', now() - interval '3 hours 30 minutes',
  '00000000-0000-4000-8000-000000000101', now() - interval '3 hours 30 minutes', NULL, NULL,
  false, 3, 'Failed: worker crashed after exhausting retries (attempt 3)', '{}'),
 -- 10 Cancelled by the user while queued
 ('aaaaaaaa-0000-4000-8000-000000000010', 'travel_orchestrator',
  '{"orchestrator_details": {"model_name": "wan_2_2_i2v_480p"}}',
  'Cancelled', NULL, NULL, now() - interval '1 day', now() - interval '23 hours',
  '00000000-0000-4000-8000-000000000101', NULL, NULL, NULL, false, 0, NULL, '{}'),
 -- 11 Queued GPU task of the 0-credit user (ineligible for the app's claim/count)
 ('aaaaaaaa-0000-4000-8000-000000000011', 'travel_segment',
  '{"model_name": "wan_2_2_i2v_480p"}',
  'Queued', NULL, NULL, now() - interval '5 minutes', NULL,
  '00000000-0000-4000-8000-000000000102', NULL, NULL, NULL, false, 0, NULL, '{}'),
 -- 12 Queued orchestrator task (GPU run_type) — orchestrators are claimable by GPU workers
 ('aaaaaaaa-0000-4000-8000-000000000012', 'join_clips_orchestrator',
  '{"orchestrator_details": {"clip_count": 3}}',
  'Queued', NULL, NULL, now() - interval '4 minutes', NULL,
  '00000000-0000-4000-8000-000000000101', NULL, NULL, NULL, false, 0, NULL, '{}');

-- a few worker log lines as the heartbeat writes them
INSERT INTO system_logs (timestamp, source_type, source_id, log_level, message, task_id, worker_id, metadata) VALUES
 (now() - interval '2 minutes', 'worker', 'gpu-20260410_100000-a1a1a1a1', 'INFO',
  'Claimed task aaaaaaaa-0000-4000-8000-000000000006', 'aaaaaaaa-0000-4000-8000-000000000006',
  'gpu-20260410_100000-a1a1a1a1', '{}'),
 (now() - interval '3 minutes', 'orchestrator_gpu', 'gpu-orchestrator-main', 'WARNING',
  'Worker gpu-20260410_110000-f6f6f6f6 heartbeat stale', NULL, 'gpu-20260410_110000-f6f6f6f6', '{}');

COMMIT;

-- -----------------------------------------------------------------------------
-- C. Worker states the legacy code writes but the migration CHECK rejects.
--    Drop the CHECK, insert, re-add the SAME CHECK as NOT VALID (new writes are
--    still checked). Remove this section for a migrations-pure database.
-- -----------------------------------------------------------------------------
BEGIN;
ALTER TABLE workers DROP CONSTRAINT workers_status_check;

INSERT INTO workers (id, instance_type, created_at, last_heartbeat, status, metadata, current_model) VALUES
 -- C1 booting worker as the old orchestrator INTENDS it after pod creation
 --    (_spawn_worker -> update_worker_status(id,'spawning',{runpod_id,pod_details,ram_tier,storage_volume}))
 ('gpu-20260410_131400-c1c1c1c1', 'NVIDIA GeForce RTX 4090',
  now() - interval '2 minutes', NULL, 'spawning',
  '{"orchestrator_status": "spawning", "runpod_id": "legacypod07", "ram_tier": 72, "storage_volume": "Peter"}', NULL),

 -- C2 crashed: what func_worker_heartbeat_with_logs(..., status_param => 'crashed') writes
 --    when the guardian sees the worker PID die (vram 0/0, last heartbeat = crash report).
 ('gpu-20260410_120000-c3c3c3c3', 'NVIDIA GeForce RTX 4090',
  now() - interval '1 hour', now() - interval '3 minutes', 'crashed',
  jsonb_build_object(
    'orchestrator_status', 'active',
    'runpod_id', 'legacypod03',
    'vram_total_mb', 0, 'vram_used_mb', 0,
    'vram_timestamp', extract(epoch from now() - interval '3 minutes')),
  'wan_2_2_i2v_480p'),

 -- C3 30-day-old error row (old orchestrator _mark_worker_error: status 'error' +
 --    error_reason / error_time [+ diagnostics]); pod long gone.
 ('gpu-20260311_090000-e5e5e5e5', 'NVIDIA GeForce RTX 4090',
  now() - interval '30 days', now() - interval '30 days' + interval '4 minutes', 'error',
  jsonb_build_object(
    'orchestrator_status', 'error',
    'runpod_id', 'legacypod05',
    'error_reason', 'Spawning timeout',
    'error_time', to_char((now() - interval '30 days' + interval '10 minutes') at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"'),
    'diagnostics', jsonb_build_object('reason', 'Spawning timeout')),
  NULL);

ALTER TABLE workers ADD CONSTRAINT workers_status_check
  CHECK (status IN ('active', 'inactive', 'terminated')) NOT VALID;
COMMIT;

-- Not seeded: a 'terminating' worker. func_claim_available_task and the old
-- orchestrator READ status 'terminating', but no legacy code ever WRITES it
-- (control_loop.py: "there's no 'terminating' status"; idle workers are terminated at once).
