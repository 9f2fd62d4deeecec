-- Raises GOL01 unless `epoch` of lease `name` is still held (not expired). The
-- row is locked `for share` until the caller's transaction ends, so a takeover
-- (which updates the row) waits for the write this check guards.
create or replace function orch_check_lease(lease_name_param text, lease_epoch_param bigint)
returns void
language plpgsql as $$
begin
    if lease_name_param is null then
        return;  -- an operator's command, not a leader's
    end if;
    perform 1 from orchestrator_leases
    where name = lease_name_param and epoch = lease_epoch_param and expires_at > now()
    for share;
    if not found then
        raise exception 'lease % epoch % is no longer held', lease_name_param, lease_epoch_param
            using errcode = 'GOL01';
    end if;
end
$$;

-- Leader lease: taken when free or expired, renewed by its holder. `epoch` grows
-- each time the lease changes hands (the fencing token). `last_contact` is when
-- it was renewed before this call, by anyone: how long nobody reached the database.
create or replace function orch_acquire_lease(
    name_param text, holder_param text, ttl_sec_param double precision
) returns json
language plpgsql as $$
declare
    lease orchestrator_leases%rowtype;
    previous timestamptz;
begin
    select renewed_at into previous from orchestrator_leases where name = name_param for update;
    insert into orchestrator_leases as l (name, holder, epoch, expires_at, renewed_at)
    values (name_param, holder_param, 1, now() + make_interval(secs => ttl_sec_param), now())
    on conflict (name) do update
        set holder = excluded.holder,
            epoch = case when l.holder = excluded.holder and l.expires_at >= now()
                         then l.epoch else l.epoch + 1 end,
            acquired_at = case when l.holder = excluded.holder and l.expires_at >= now()
                               then l.acquired_at else now() end,
            expires_at = excluded.expires_at,
            renewed_at = now()
        where l.holder = excluded.holder or l.expires_at < now()
    returning * into lease;
    if not found then
        select * into lease from orchestrator_leases where name = name_param;
    end if;
    return json_build_object('leader', lease.holder = holder_param, 'holder', lease.holder,
                             'epoch', lease.epoch, 'expires_at', lease.expires_at,
                             'ttl_sec', extract(epoch from lease.expires_at - now()),
                             'last_contact', extract(epoch from previous));
end
$$;

create or replace function orch_release_lease(name_param text, holder_param text) returns void
language sql as $$
    update orchestrator_leases set expires_at = now()
    where name = name_param and holder = holder_param;
$$;
