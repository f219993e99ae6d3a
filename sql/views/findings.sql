-- Every validated finding with its model's provenance: which model version produced each flag.
CREATE OR REPLACE VIEW findings AS
SELECT
    programme,
    batch_id,
    study_instance_uid,
    score,
    flag,
    threshold,
    priority_rank,
    instances_scored,
    instances_failed,
    model_name,
    model_version,
    weights_sha256,
    validated_at
FROM validated_findings
ORDER BY programme, batch_id, priority_rank;
