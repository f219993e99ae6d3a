"""Privacy: the erasures the objection register asks for, carried out in both zones."""

# No `from __future__ import annotations`: Dagster reads the context and resource annotations.

import dagster as dg

from resources.lake import LakeDatabase
from resources.secrets import PseudonymKey, VaultKey
from resources.zones import ZoneStore
from screenlake import layout


@dg.asset(group_name="privacy", kinds={"parquet"})
def patient_erasures(
    context: dg.AssetExecutionContext,
    phi_zone: ZoneStore,
    research_zone: ZoneStore,
    pseudonym_key: PseudonymKey,
    vault_key: VaultKey,
    lake: LakeDatabase,
) -> dg.MaterializeResult:
    """Every erasure (objection of scope `all`) the register holds and no run has finished:
    the patient's files and rows removed from every batch of both zones, each erasure recorded
    in the PHI zone (encrypted) and in the `erasure_ledger` (counts and digests, no PHI).
    Names erasures by their IDs only."""
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
    return dg.MaterializeResult(
        metadata={
            "erasures_carried_out": len(done),
            "erasure_ids": dg.MetadataValue.json([r.erasure_id for r in done]),
            "batches_rewritten": sum(len(r.traces.batches) for r in done),
            "erasures_in_force": sum(o.scope == SCOPE_ALL for o in in_force.values()),
            "erasures_recorded": len(erasure_requests(phi_zone, cipher)),
        }
    )
