"""Privacy: the erasures the objection register asks for, carried out in both zones.

An action on the whole lake rather than data of a partition, so an op in a job of its own
(`patient_erasure`), which the register's sensor launches: as an asset it would join every
`--select '*'` of a night's partition and could rewrite a batch that run is writing."""

# No `from __future__ import annotations`: Dagster reads the context and resource annotations.

import dagster as dg

from resources.lake import LakeDatabase
from resources.secrets import PseudonymKey, VaultKey
from resources.zones import ZoneStore
from screenlake import layout


@dg.op(tags={"kind": "privacy"})
def patient_erasures(
    context: dg.OpExecutionContext,
    phi_zone: ZoneStore,
    research_zone: ZoneStore,
    pseudonym_key: PseudonymKey,
    vault_key: VaultKey,
    lake: LakeDatabase,
) -> dg.Output[int]:
    """Every erasure (objection of scope `all`) the register holds and no run has finished:
    the patient's files and rows removed from every batch of both zones, each erasure recorded
    in the PHI zone (encrypted) and in the `erasure_ledger` (counts and digests, no PHI).
    Names erasures by their IDs only; the output is how many were carried out."""
    from screenlake.erasure.run import erase_patients, erasure_requests
    from screenlake.objections import SCOPE_ALL, ObjectionRegister

    key, cipher = pseudonym_key.key(), vault_key.cipher()
    in_force = ObjectionRegister(phi_zone, key).in_force()
    done = erase_patients(
        phi_zone,
        research_zone,
        key,
        cipher,
        in_force.values(),
        layout.research_run_id(key, context.run.run_id),
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
    name="patient_erasure",
    description="Carry out the erasures the objection register asks for, in both zones.",
)
def erasure_job() -> None:
    """The one step that carries out the erasures."""
    patient_erasures()
