-- Bindings of one EPG that arrive together go to the APIC in one POST (issue 9): a binding
-- waits as `pending` from `pending_since` until its EPG's batch is posted, which happens when no
-- other attach of the EPG is still before its `bind` step, or when the oldest pending binding
-- has waited `workflow.binding_batch_window_ms`.
ALTER TABLE bindings ADD COLUMN pending_since TIMESTAMPTZ;
UPDATE bindings SET pending_since = updated_at WHERE apic_state = 'pending';

-- A job step that waits (for its EPG's binding batch) gives its worker back; the wait is not
-- an attempt, so the step's attempts count only real tries.
ALTER TABLE job_steps ADD COLUMN waiting BOOLEAN NOT NULL DEFAULT false;
