-- The models' performance against clinicians' labels: per programme, window, site, device
-- model and model version, the most recently computed audit row (each partition's
-- performance_audit recomputes its windows as of its own day; batches are not dated here, so
-- "latest" is by computed_at). Metrics are null where undefined, intervals null with too few
-- cases. Overall rows (site and device model 'all') first.
CREATE OR REPLACE VIEW model_performance AS
WITH ranked AS (
    SELECT
        *,
        row_number() OVER (
            PARTITION BY programme, "window", site, device_model, model_name, model_version
            ORDER BY computed_at DESC, batch_id
        ) AS recency
    FROM performance_audit
)
SELECT
    programme,
    "window",
    site,
    device_model,
    model_name,
    model_version,
    threshold,
    studies,
    positives,
    studies - positives AS negatives,
    auc,
    auc_low,
    auc_high,
    sensitivity,
    sensitivity_low,
    sensitivity_high,
    specificity,
    specificity_low,
    specificity_high,
    ppv,
    ppv_low,
    ppv_high,
    batch_id,
    computed_at
FROM ranked
WHERE recency = 1
ORDER BY
    programme,
    model_name,
    model_version,
    "window",
    (site = 'all' AND device_model = 'all') DESC,
    site = 'all' DESC,
    device_model,
    site;
