-- Quarantined VLANs and addresses outlive the rows that held them (issue 8, 3.1). While their
-- pool or subnet exists they stay in vlan_assignments / ip_leases; when that owner is deleted
-- they move here, keyed by what names them independently of row ids, and return as quarantined
-- when an owner with the same name comes back before the quarantine ends:
-- a pool by its name, a subnet by tenant, bridge domain and CIDR (a bridge domain owns its
-- subnets, so at most one subnet of a tenant's bridge domain can match).
CREATE TABLE released_vlans (
    pool              TEXT NOT NULL,
    vlan              INTEGER NOT NULL CHECK (vlan BETWEEN 1 AND 4094),
    epg_key           TEXT NOT NULL,
    quarantined_until TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (pool, vlan)
);

CREATE TABLE released_addresses (
    tenant            TEXT NOT NULL,
    bridge_domain     TEXT NOT NULL,
    cidr              CIDR NOT NULL,
    address           INET NOT NULL,
    -- The EPG and reservation that held it: a re-created EPG gets the name's address back.
    app               TEXT NOT NULL,
    epg               TEXT NOT NULL,
    reservation       TEXT,
    quarantined_until TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant, bridge_domain, cidr, address)
);
