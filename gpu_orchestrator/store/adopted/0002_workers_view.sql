-- The `workers` view of 0001, reading the adoption time once per query: as a
-- function call in each row it ran its query on `orchestrator_events` for every
-- legacy row that had ended without a recorded end, every cycle (a scalar
-- subquery is an InitPlan, evaluated once). Same columns, same values.
create or replace view workers as
select w.id,
       coalesce(s.status, l.status) as status,
       w.created_at,
       coalesce(s.ready_at, case when l.status = 'active'
           then coalesce(orch_try_timestamptz(w.metadata ->> 'promoted_to_active_at'),
                         w.created_at) end) as ready_at,
       w.last_heartbeat,
       s.drain_requested_at,
       coalesce(s.terminated_at, case
           when s.status is null and (l.status = 'terminated'
                or (l.status = 'error' and w.status <> 'crashed'
                    and coalesce(w.last_heartbeat, w.created_at) < (select orch_adopted_at())))
           then coalesce(orch_try_timestamptz(w.metadata ->> 'terminated_at'),
                         (select orch_adopted_at()), w.created_at) end) as terminated_at,
       coalesce(s.termination_reason, case
           when l.status = 'error' and w.status = 'crashed' then 'crashed'
           when l.status = 'error' then 'unknown' end) as termination_reason,
       coalesce(s.last_task_finished_at, (
           select max(t.generation_processed_at) from public.tasks t
           where t.worker_id = w.id and t.status in ('Complete', 'Failed'))) as last_task_finished_at,
       coalesce(s.tasks_completed, 0) + (
           select count(*)::integer from (
               select from public.tasks t
               where t.worker_id = w.id and t.status = 'Complete' limit 100) c) as tasks_completed,
       coalesce(s.pod_id, w.metadata ->> 'runpod_id') as pod_id,
       coalesce(s.offering, w.instance_type) as offering,
       coalesce(s.probe, false) as probe,
       s.failed_at,
       coalesce(s.task_caused, false) as task_caused,
       s.cost_per_hr,
       s.pod_missing_since,
       s.fingerprint,
       coalesce(s.provider, case when l.status <> 'external' then 'runpod' end) as provider,
       coalesce(w.metadata, '{}'::jsonb) as metadata,
       s.launched is true as launched
from public.workers w
left join worker_state s on s.worker_id = w.id
cross join lateral (select orch_legacy_status(w.id, w.instance_type, w.status, w.metadata)
                    as status) l;
