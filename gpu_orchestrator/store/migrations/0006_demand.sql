-- Issue 11: `orch_snapshot` (common/snapshot.sql) takes the GPU task types and the
-- demand function, and sends each hold's task type: its old signature goes, so no
-- call can be ambiguous between the two.
drop function if exists orch_snapshot(double precision, integer);
