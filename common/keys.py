"""Every Redis name the service uses. Nothing else builds a key by hand."""

from __future__ import annotations

STREAM_FINAL = "stt:jobs:final"
STREAM_INTERIM = "stt:jobs:interim"
STREAM_BATCH = "stt:jobs:batch"
STREAM_DEAD = "stt:jobs:dead"
STREAMS = (STREAM_FINAL, STREAM_INTERIM, STREAM_BATCH)
# Interims are worth nothing once late: their stream is capped (approximately) at this length.
INTERIM_MAXLEN = 10000
DEAD_MAXLEN = 10000
GROUP = "decoders"
JOB_FIELD = b"job"


def stream_for(kind: str) -> str:
    return {"final": STREAM_FINAL, "interim": STREAM_INTERIM, "batch": STREAM_BATCH}[kind]


def kind_of(stream: str) -> str:
    """The job kind a stream holds."""
    return {STREAM_FINAL: "final", STREAM_INTERIM: "interim", STREAM_BATCH: "batch"}[stream]


def audio_key(session: str, utt: int) -> str:
    return "stt:audio:%s:%d" % (session, utt)


def results_channel(gateway_id: str) -> str:
    return "stt:results:%s" % gateway_id


def result_key(job_id: str) -> str:
    return "stt:result:%s" % job_id


def node_key(kind: str, node_id: str) -> str:
    return "stt:node:%s:%s" % (kind, node_id)


def node_index(kind: str) -> str:
    """Sorted set of the live nodes of a kind, scored by when their heartbeat expires (unix ms):
    who is alive is read without scanning the keyspace."""
    return "stt:nodes:%s" % kind


def final_job_id(session: str, utt: int) -> str:
    """Re-queues of a final reuse this id, so the result cache answers them."""
    return "%s:%d:f" % (session, utt)


def interim_job_id(session: str, utt: int, rev: int) -> str:
    return "%s:%d:i%d" % (session, utt, rev)


def session_key(session: str) -> str:
    """Hash: what a gateway needs to take the session over (gateway/resume.py)."""
    return "stt:session:%s" % session


def session_log(session: str) -> str:
    """List: the messages sent to the session's client, for replay after a resume."""
    return "stt:session:%s:log" % session


def session_resumes(session: str) -> str:
    """Counter of the session's resumes in the last minute."""
    return "stt:session:%s:resumes" % session
