-- Studies the model flagged for clinician review, highest priority first (pseudonymised).
CREATE OR REPLACE VIEW flagged_studies AS
SELECT
    programme,
    study_instance_uid,
    patient_pseudonym,
    study_date,
    score,
    priority_rank,
    model_name,
    model_version
FROM validated_findings
WHERE flag
ORDER BY programme, priority_rank;
