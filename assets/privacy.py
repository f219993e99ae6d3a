"""Privacy: the erasures the objection register asks for, carried out in both zones.

An action on the whole lake rather than data of a partition, so an op in a job of its own
(`patient_erasure`), which the register's sensor launches: as an asset it would join every
`--select '*'` of a night's partition and could rewrite a batch that run is writing. For the
same reason it waits while a screening run that started before it is in progress (that run
could write back, from what it read before the erasure, a row the erasure has just removed),
and a night's first step waits while an earlier erasure is in progress."""

# No `from __future__ import annotations`: Dagster reads the context and resource annotations.

import dagster as dg

from resources.lake import LakeDatabase
from resources.models import ModelRegistry
from resources.secrets import PseudonymKey, VaultKey
from resources.zones import ZoneStore
from screenlake import layout

# The screening job's name (orchestration.automation defines it, and imports this module).
SCREENING_JOB = "screening_pipeline"
ERASURE_JOB = "patient_erasure"
_IN_PROGRESS = [
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


def earlier_runs_in_progress(instance: dg.DagsterInstance, job_name: str, run_id: str) -> int:
    """How many runs of `job_name` are in progress that were created before the run `run_id`.
    An erasure and a night's run each wait for the other kind only when it came first, so
    that two that start together do not wait for each other."""
    this = instance.get_run_record_by_id(run_id)
    records = instance.get_run_records(dg.RunsFilter(job_name=job_name, statuses=_IN_PROGRESS))
    if this is None:
        return len(records)
    return sum(r.create_timestamp < this.create_timestamp for r in records)


class ErasureWaits(dg.Config):
    """How long an erasure waits for the screening runs in progress to end before it fails."""

    wait_seconds: int = 300
    waits: int = 48


@dg.op(tags={"kind": "privacy"})
def patient_erasures(
    context: dg.OpExecutionContext,
    config: ErasureWaits,
    phi_zone: ZoneStore,
    research_zone: ZoneStore,
    pseudonym_key: PseudonymKey,
    vault_key: VaultKey,
    lake: LakeDatabase,
    models: ModelRegistry,
) -> dg.Output[int]:
    """Every erasure (objection of scope `all`) the register holds and no run has finished:
    the patient's files and rows removed from every batch of both zones, each batch's Data Docs
    built again from what is left, each erasure recorded in the PHI zone (encrypted) and in the
    `erasure_ledger` (counts and digests, no PHI).
    Names erasures by their IDs only; the output is how many were carried out."""
    from screenlake.erasure.evidence import rebuild_data_docs
    from screenlake.erasure.run import erase_patients, erasure_requests
    from screenlake.objections import SCOPE_ALL, ObjectionRegister

    busy = earlier_runs_in_progress(context.instance, SCREENING_JOB, context.run.run_id)
    if busy:
        context.log.info(f"{busy} screening runs in progress: the erasure waits for them to end")
        raise dg.RetryRequested(max_retries=config.waits, seconds_to_wait=config.wait_seconds)

    key, cipher = pseudonym_key.key(), vault_key.cipher()
    in_force = ObjectionRegister(phi_zone, key).in_force()
    run_token = layout.research_run_id(key, context.run.run_id)
    done = erase_patients(
        phi_zone,
        research_zone,
        key,
        cipher,
        in_force.values(),
        run_token,
        lambda root, batch: rebuild_data_docs(
            root, batch, key, models.manifest_for(batch.programme), run_token
        ),
    )
    lake.refresh_views()
    return dg.Output(
        len(done),
        metadata={
            "erasures_carried_out": len(done),
            "erasure_ids": dg.MetadataValue.json([r.erasure_id for r in done]),
            "batches_rewritten": sum(len(r.traces.batches) for r in done),
            "erasures_in_force": sum(o.scope == SCOPE_ALL for o in in_force.values()),
            "erasures_recorded": len(erasure_requests(phi_zone, cipher)),
        },
    )


@dg.job(
    name=ERASURE_JOB,
    description="Carry out the erasures the objection register asks for, in both zones.",
)
def erasure_job() -> None:
    """The one step that carries out the erasures."""
    patient_erasures()
