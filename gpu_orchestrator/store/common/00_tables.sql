-- Tables only the orchestrator uses, the same in both layouts (in `public` on a
-- native database, in `orchestrator` on an adopted one), in their current shape:
-- idempotent, re-applied on every migrate. New columns go here as `add column if
-- not exists`.

-- Append-only history of every worker transition: the source of truth for the
-- breaker, the health report, alerts and replay.
create table if not exists worker_events (
    id bigserial primary key,
    worker_id text not null,
    at timestamptz not null default now(),
    kind text not null,
    reason text,
    detail jsonb not null default '{}'::jsonb
);
create index if not exists worker_events_at_idx on worker_events (at);
create index if not exists worker_events_worker_idx on worker_events (worker_id, at);

-- One row per lease name: who leads, until when, and a fencing epoch that grows
-- each time leadership changes hands.
create table if not exists orchestrator_leases (
    name text primary key,
    holder text not null,
    epoch bigint not null,
    expires_at timestamptz not null,
    acquired_at timestamptz not null default now()
);
-- When the lease was last renewed (by whoever held it): the orchestrator's last
-- contact with the database, so a successor knows how long nobody could look.
alter table orchestrator_leases add column if not exists renewed_at timestamptz;

-- Append-only audit of orchestrator-level decisions and operator levers:
-- breaker_opened / breaker_closed, breaker_reset, spawning_paused / _resumed,
-- kill_switch_on / _off. Who (`actor`) and why (`reason`) are always recorded.
create table if not exists orchestrator_events (
    id bigserial primary key,
    at timestamptz not null default now(),
    kind text not null,
    actor text not null,
    reason text not null,
    detail jsonb not null default '{}'::jsonb
);
create index if not exists orchestrator_events_kind_idx on orchestrator_events (kind, at desc);

-- Settings the database enforces whoever calls (a worker cannot pass its own
-- attempts limit). Written by the orchestrator at start.
create table if not exists orchestrator_settings (
    name text primary key,
    value jsonb not null,
    set_at timestamptz not null default now()
);

-- Tables only the orchestrator uses: with row level security on and no policy, a
-- Supabase anon or authenticated key reads and writes nothing through the Data
-- API; the table owner (our DATABASE_URL role) is not subject to it.
alter table worker_events enable row level security;
alter table orchestrator_events enable row level security;
alter table orchestrator_leases enable row level security;
alter table orchestrator_settings enable row level security;
