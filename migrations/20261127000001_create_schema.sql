-- Weft's data model (DESIGN.md "Data model"). Postgres is the single source of truth:
-- every uniqueness and every allocation guarantee below is enforced here, not in the service.

CREATE TABLE api_tokens (
    id          BIGSERIAL PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    role        TEXT NOT NULL CHECK (role IN ('viewer', 'operator', 'admin', 'agent')),
    -- sha256 of the bearer token, hex; the token itself is shown once and never stored.
    token_hash  TEXT NOT NULL UNIQUE,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE vlan_pools (
    id          BIGSERIAL PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL DEFAULT '',
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE vlan_ranges (
    pool_id    BIGINT NOT NULL REFERENCES vlan_pools(id) ON DELETE CASCADE,
    first_vlan INTEGER NOT NULL CHECK (first_vlan BETWEEN 1 AND 4094),
    last_vlan  INTEGER NOT NULL CHECK (last_vlan BETWEEN 1 AND 4094),
    CHECK (first_vlan <= last_vlan),
    PRIMARY KEY (pool_id, first_vlan)
);

CREATE TABLE epgs (
    id              BIGSERIAL PRIMARY KEY,
    tenant          TEXT NOT NULL,
    app             TEXT NOT NULL,
    name            TEXT NOT NULL,
    bridge_domain   TEXT NOT NULL,
    physical_domain TEXT NOT NULL,
    pool_id         BIGINT NOT NULL REFERENCES vlan_pools(id),
    requested_vlan  INTEGER CHECK (requested_vlan BETWEEN 1 AND 4094),
    mode            TEXT NOT NULL CHECK (mode IN ('regular', 'untagged', 'native')),
    immediacy       TEXT NOT NULL CHECK (immediacy IN ('immediate', 'lazy')),
    managed         BOOLEAN NOT NULL DEFAULT false,
    description     TEXT NOT NULL DEFAULT '',
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (tenant, app, name)
);

-- One row per VLAN taken from a pool: held by an EPG, or quarantined after the EPG was
-- deleted. UNIQUE (pool_id, vlan) makes a double allocation impossible.
CREATE TABLE vlan_assignments (
    pool_id           BIGINT NOT NULL REFERENCES vlan_pools(id),
    vlan              INTEGER NOT NULL CHECK (vlan BETWEEN 1 AND 4094),
    epg_id            BIGINT UNIQUE REFERENCES epgs(id) ON DELETE SET NULL,
    -- The EPG's natural key, kept after release so the same EPG can take its VLAN back.
    epg_key           TEXT NOT NULL,
    state             TEXT NOT NULL CHECK (state IN ('active', 'quarantined')),
    quarantined_until TIMESTAMPTZ,
    CHECK ((state = 'active') = (epg_id IS NOT NULL)),
    CHECK ((state = 'quarantined') = (quarantined_until IS NOT NULL)),
    PRIMARY KEY (pool_id, vlan)
);

CREATE TABLE subnets (
    id          BIGSERIAL PRIMARY KEY,
    epg_id      BIGINT NOT NULL REFERENCES epgs(id) ON DELETE CASCADE,
    position    INTEGER NOT NULL,
    cidr        CIDR NOT NULL,
    gateway     INET NOT NULL,
    -- [{"first": "10.0.0.2", "last": "10.0.0.9"}]
    reserved    JSONB NOT NULL DEFAULT '[]',
    -- Every allocatable address below this one is taken: allocation scans from here, so
    -- handing out the lowest free address stays O(1) on large subnets.
    alloc_hint  INET NOT NULL,
    UNIQUE (epg_id, cidr),
    UNIQUE (epg_id, position),
    CHECK (gateway << cidr)
);

CREATE TABLE hosts (
    id          BIGSERIAL PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    agent_url   TEXT NOT NULL,
    -- Bearer token Weft presents to the agent; it must be sent, so it cannot be hashed.
    -- Never returned by the API.
    agent_token TEXT,
    backend     TEXT NOT NULL CHECK (backend IN ('linux-bridge', 'ovs', 'macvlan')),
    mtu         INTEGER NOT NULL CHECK (mtu BETWEEN 68 AND 9216),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE host_uplinks (
    host_id    BIGINT NOT NULL REFERENCES hosts(id) ON DELETE CASCADE,
    interface  TEXT NOT NULL,
    path_dn    TEXT NOT NULL,
    -- configured | lldp | agreed | conflict (LLDP discovery fills this in later).
    learned    TEXT NOT NULL DEFAULT 'configured'
               CHECK (learned IN ('configured', 'lldp', 'agreed', 'conflict')),
    PRIMARY KEY (host_id, interface)
);

CREATE TABLE attachments (
    id           UUID PRIMARY KEY,
    host_id      BIGINT NOT NULL REFERENCES hosts(id),
    epg_id       BIGINT NOT NULL REFERENCES epgs(id),
    container    TEXT NOT NULL,
    interface    TEXT NOT NULL DEFAULT 'eth0',
    mac          TEXT,
    state        TEXT NOT NULL CHECK (state IN
                 ('pending', 'binding', 'wiring', 'attached', 'detaching', 'failed', 'lost')),
    last_error   TEXT,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (host_id, container, interface)
);

-- IP leases serve reservations (a client name) now and attachments later.
-- UNIQUE (subnet_id, address) makes a double allocation impossible.
CREATE TABLE ip_leases (
    subnet_id         BIGINT NOT NULL REFERENCES subnets(id) ON DELETE CASCADE,
    address           INET NOT NULL,
    epg_id            BIGINT NOT NULL REFERENCES epgs(id) ON DELETE CASCADE,
    reservation       TEXT,
    attachment_id     UUID REFERENCES attachments(id) ON DELETE SET NULL,
    state             TEXT NOT NULL CHECK (state IN ('active', 'quarantined')),
    quarantined_until TIMESTAMPTZ,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK ((state = 'quarantined') = (quarantined_until IS NOT NULL)),
    PRIMARY KEY (subnet_id, address)
);
CREATE UNIQUE INDEX ip_leases_reservation ON ip_leases (epg_id, reservation) WHERE reservation IS NOT NULL;

CREATE TABLE bindings (
    id         BIGSERIAL PRIMARY KEY,
    epg_id     BIGINT NOT NULL REFERENCES epgs(id),
    path_dn    TEXT NOT NULL,
    encap      TEXT NOT NULL,
    mode       TEXT NOT NULL CHECK (mode IN ('regular', 'untagged', 'native')),
    ref_count  INTEGER NOT NULL DEFAULT 0 CHECK (ref_count >= 0),
    apic_state TEXT NOT NULL DEFAULT 'pending',
    last_fault TEXT,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (epg_id, path_dn)
);

-- Durable operation log driving the workflows; workers claim rows with FOR UPDATE SKIP LOCKED.
CREATE TABLE jobs (
    id          UUID PRIMARY KEY,
    kind        TEXT NOT NULL,
    payload     JSONB NOT NULL DEFAULT '{}',
    state       TEXT NOT NULL DEFAULT 'queued'
                CHECK (state IN ('queued', 'running', 'succeeded', 'failed')),
    step        TEXT,
    attempts    INTEGER NOT NULL DEFAULT 0,
    run_after   TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_error  TEXT,
    request_id  TEXT,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX jobs_runnable ON jobs (run_after) WHERE state IN ('queued', 'running');

CREATE TABLE audit_log (
    id         BIGSERIAL PRIMARY KEY,
    at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    actor      TEXT NOT NULL,
    action     TEXT NOT NULL,
    resource   TEXT NOT NULL,
    before     JSONB,
    after      JSONB,
    request_id TEXT
);
CREATE INDEX audit_log_resource ON audit_log (resource);
