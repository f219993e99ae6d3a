-- Drift per programme and feature: the latest statistic, and how often it warned over all
-- batches measured (the trend is in drift_metrics, one row per batch). Warnings first.
CREATE OR REPLACE VIEW drift AS
WITH ranked AS (
    SELECT
        *,
        row_number() OVER (
            PARTITION BY programme, kind, feature, statistic ORDER BY computed_at DESC
        ) AS recency,
        count(*) FILTER (WHERE value IS NOT NULL) OVER (
            PARTITION BY programme, kind, feature, statistic
        ) AS batches_measured,
        count(*) FILTER (WHERE warning) OVER (
            PARTITION BY programme, kind, feature, statistic
        ) AS batches_warned
    FROM drift_metrics
)
SELECT
    programme,
    kind,
    feature,
    statistic,
    batch_id AS latest_batch_id,
    value,
    p_value,
    threshold,
    warning,
    reference_batches,
    reference_rows,
    current_rows,
    batches_measured,
    batches_warned,
    computed_at
FROM ranked
WHERE recency = 1
ORDER BY warning DESC, programme, kind, feature, statistic;
