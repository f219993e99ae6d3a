-- One row per programme and night (a batch is one programme's day, named by a keyed token so
-- that no real date sits beside the shifted study dates): volumes, failures, flags, rate.
CREATE OR REPLACE VIEW programme_daily_summary AS
WITH predictions AS (
    SELECT
        programme,
        batch_id,
        count(*) AS instances,
        count(*) FILTER (WHERE status = 'failed') AS instances_failed
    FROM instance_predictions
    GROUP BY ALL
)
SELECT
    b.programme,
    b.batch_id,
    b.instances_deidentified,
    b.instances_quarantined,
    coalesce(p.instances_failed, 0) AS instances_not_scored,
    b.studies,
    b.studies_flagged,
    b.studies_unscored,
    round(b.studies_flagged / nullif(b.studies - b.studies_unscored, 0), 4) AS positive_rate
FROM programme_batch_summary AS b
LEFT JOIN predictions AS p USING (programme, batch_id)
ORDER BY b.programme, b.batch_id;
