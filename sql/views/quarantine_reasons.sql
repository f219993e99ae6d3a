-- Why files were quarantined, per programme (reasons hold no identifiers).
CREATE OR REPLACE VIEW quarantine_reasons AS
SELECT
    programme,
    split_part(reason, ':', 1) AS reason,
    count(*) AS files
FROM deidentification_audit
WHERE outcome = 'quarantined'
GROUP BY ALL
ORDER BY programme, files DESC;
