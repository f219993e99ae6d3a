-- One row per programme and batch: volumes, quarantine and flags, for the nightly look.
CREATE OR REPLACE VIEW programme_batch_summary AS
WITH audit AS (
    SELECT
        programme,
        batch_id,
        count(*) FILTER (WHERE outcome = 'deidentified') AS instances_deidentified,
        count(*) FILTER (WHERE outcome = 'quarantined') AS instances_quarantined
    FROM deidentification_audit
    GROUP BY ALL
),
findings AS (
    SELECT
        programme,
        batch_id,
        count(*) AS studies,
        count(*) FILTER (WHERE flag) AS studies_flagged,
        count(*) FILTER (WHERE score IS NULL) AS studies_unscored
    FROM study_findings
    GROUP BY ALL
)
SELECT
    audit.programme,
    audit.batch_id,
    audit.instances_deidentified,
    audit.instances_quarantined,
    coalesce(findings.studies, 0) AS studies,
    coalesce(findings.studies_flagged, 0) AS studies_flagged,
    coalesce(findings.studies_unscored, 0) AS studies_unscored
FROM audit
LEFT JOIN findings USING (programme, batch_id)
ORDER BY audit.programme, audit.batch_id;
