-- One row per catalogued study with its validated finding, if any (pseudonymised).
CREATE OR REPLACE VIEW studies AS
SELECT
    s.programme,
    s.batch_id,
    s.study_instance_uid,
    s.patient_pseudonym,
    s.study_date,
    s.modalities,
    s.series,
    s.instances,
    s.patient_sex,
    s.patient_age,
    f.score,
    f.flag,
    f.priority_rank,
    f.instances_scored,
    f.instances_failed,
    f.model_name,
    f.model_version
FROM study_catalog AS s
LEFT JOIN validated_findings AS f USING (batch_id, programme, study_instance_uid)
ORDER BY s.programme, s.batch_id, f.priority_rank NULLS LAST;
