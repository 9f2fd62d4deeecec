-- The REST store (Supabase's Data API) cannot migrate: it checks the schema with
-- this function when it starts, and exits with advice when the database is behind.
create or replace function orch_schema_version() returns json
language sql stable as $$
    select coalesce(json_agg(version order by version), '[]'::json) from orchestrator_migrations;
$$;
