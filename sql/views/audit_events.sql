-- The audit trail, newest first: which run did what, under which profile and model version.
CREATE OR REPLACE VIEW audit_events AS
SELECT
    recorded_at,
    programme,
    batch_id,
    run_token,
    event,
    subject,
    outcome,
    rows_in,
    rows_out,
    profile_version,
    model_name,
    model_version,
    actor,
    detail
FROM audit_trail
ORDER BY recorded_at DESC, event_id;
