-- Quarantined files per programme and batch, by reason (reasons hold no identifiers).
CREATE OR REPLACE VIEW quarantine_summary AS
SELECT
    programme,
    batch_id,
    split_part(reason, ':', 1) AS reason,
    count(*) AS files
FROM deidentification_audit
WHERE outcome = 'quarantined'
GROUP BY ALL
ORDER BY programme, batch_id, files DESC;
