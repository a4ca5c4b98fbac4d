-- The attach/detach workflow (issue 9): what an attachment asked for and what it got, the
-- bindings each attachment holds a reference on, and the job log's steps.

-- An attachment's request (target for the agent, optional address or reservation) and its
-- outcome (address, VLAN, fabric paths). `address` is unique per EPG among attachments, so
-- two attachments can never be wired with one address, even through a reservation.
ALTER TABLE attachments
    ADD COLUMN target            JSONB NOT NULL,
    ADD COLUMN requested_address INET,
    ADD COLUMN reservation       TEXT,
    ADD COLUMN address           INET,
    ADD COLUMN prefix_len        INTEGER,
    ADD COLUMN gateway           INET,
    ADD COLUMN vlan              INTEGER CHECK (vlan BETWEEN 1 AND 4094),
    ADD COLUMN paths             TEXT[] NOT NULL DEFAULT '{}',
    ADD COLUMN operation_id      UUID,
    -- running | stopped | gone, as the agent last reported it; rewired_at when it re-wired.
    ADD COLUMN container_status  TEXT NOT NULL DEFAULT 'running'
               CHECK (container_status IN ('running', 'stopped', 'gone')),
    ADD COLUMN rewired_at        TIMESTAMPTZ,
    ADD COLUMN lost_at           TIMESTAMPTZ,
    -- Insertion order, for the list's cursor.
    ADD COLUMN seq               BIGSERIAL;
CREATE UNIQUE INDEX attachments_address ON attachments (epg_id, address) WHERE address IS NOT NULL;
CREATE INDEX attachments_state ON attachments (state);

-- An attachment owns at most one lease (its reservation's lease is the reservation's).
CREATE UNIQUE INDEX ip_leases_attachment ON ip_leases (attachment_id) WHERE attachment_id IS NOT NULL;

-- Which attachment holds a reference on which binding: the reference count is the number of
-- these rows, kept in bindings.ref_count under the binding's row lock. A step redone after a
-- crash inserts nothing twice, so it counts nothing twice.
CREATE TABLE binding_refs (
    binding_id    BIGINT NOT NULL REFERENCES bindings(id) ON DELETE CASCADE,
    attachment_id UUID NOT NULL,
    PRIMARY KEY (binding_id, attachment_id)
);
CREATE INDEX binding_refs_attachment ON binding_refs (attachment_id);
-- When the last reference left: the APIC binding is removed after a linger (so replacing a
-- container does not flap it); a new reference within the linger keeps it.
ALTER TABLE bindings
    ADD COLUMN release_after TIMESTAMPTZ,
    ADD COLUMN checked_at    TIMESTAMPTZ;
ALTER TABLE bindings ADD CHECK (apic_state IN ('pending', 'applied', 'faulted'));

-- The job log: which attachment a job works on, whether it goes forward or undoes, and who
-- holds it until when (a crashed worker's claim runs out and another replica resumes it).
ALTER TABLE jobs
    ADD COLUMN attachment_id UUID,
    ADD COLUMN phase         TEXT NOT NULL DEFAULT 'forward' CHECK (phase IN ('forward', 'undo')),
    ADD COLUMN claimed_by    UUID,
    ADD COLUMN claimed_until TIMESTAMPTZ,
    ADD COLUMN finished_at   TIMESTAMPTZ;
ALTER TABLE jobs DROP CONSTRAINT jobs_state_check;
ALTER TABLE jobs ADD CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled'));
ALTER TABLE jobs ADD CHECK (kind IN ('attach', 'detach'));
CREATE INDEX jobs_attachment ON jobs (attachment_id);
-- At most one unfinished job per attachment: a second PUT or DELETE finds it.
CREATE UNIQUE INDEX jobs_one_live ON jobs (attachment_id) WHERE state IN ('queued', 'running');

-- Each step of a job as it ran: start/end, attempts, last error.
CREATE TABLE job_steps (
    job_id      UUID NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    phase       TEXT NOT NULL CHECK (phase IN ('forward', 'undo')),
    step        TEXT NOT NULL,
    position    INTEGER NOT NULL,
    started_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at TIMESTAMPTZ,
    attempts    INTEGER NOT NULL DEFAULT 0,
    last_error  TEXT,
    PRIMARY KEY (job_id, phase, step)
);
