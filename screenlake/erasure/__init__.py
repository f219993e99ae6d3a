"""Erasure (GDPR Art. 17): what screenlake holds about patients whose objection has scope `all`
(`traces`), removed from every artefact of both zones (`artefacts`), proved in a ledger."""
