"""Writes of the drafts app, one module per role:

- ``pipeline``: the ``classify_and_draft`` task's service (work claim, load, classify, draft);
- ``onecall``: the tag and the reply in one LLM call, when no fast path decides;
- ``classify``: tagging an inbound message and storing the tag (message and lead);
- ``generation``: writing a draft's reply with the LLM;
- ``lifecycle``: a draft row's inserts and final writes, opt-outs, reviving stale drafts;
- ``sweeper``: lost work handed back to the workers (celery beat);
- ``actions``: operator actions (reject, edit, regenerate).

Approving and sending is ``drafts.sending``. A run's state travels in ``drafts.run.DraftRun``.
"""
