"""Every Redis name the service uses. Nothing else builds a key by hand."""

from __future__ import annotations

from common.messages import JobKind

STREAM_FINAL = "stt:jobs:final"  # live finals (consumer group "decoders", as every job stream)
STREAM_INTERIM = "stt:jobs:interim"  # interims, capped
STREAM_BATCH = "stt:jobs:batch"  # parts of uploaded files
STREAM_SPECULATIVE = "stt:jobs:speculative"  # would-be finals decoded in a pause
STREAM_DEAD = "stt:jobs:dead"  # jobs that failed MAX_DELIVERIES times, with why
# End-of-turn questions (decoder/turns.py): a stream of its own, read by its own consumer loop.
STREAM_TURN = "stt:jobs:turn"
_STREAM_OF = {
    JobKind.FINAL: STREAM_FINAL,
    JobKind.SPECULATIVE: STREAM_SPECULATIVE,
    JobKind.INTERIM: STREAM_INTERIM,
    JobKind.BATCH: STREAM_BATCH,
    JobKind.TURN: STREAM_TURN,
}
_KIND_OF = {stream: kind for kind, stream in _STREAM_OF.items()}
# The streams of decodes (the decoder's scheduler reads these; the turn stream is apart).
STREAMS = (STREAM_FINAL, STREAM_SPECULATIVE, STREAM_INTERIM, STREAM_BATCH)
# Interims are worth nothing once late: their stream is capped (approximately) at this length.
INTERIM_MAXLEN = 10000
TURN_MAXLEN = 10000  # the same for end-of-turn questions
DEAD_MAXLEN = 10000
GROUP = "decoders"
JOB_FIELD = b"job"


def stream_for(kind: JobKind) -> str:
    return _STREAM_OF[kind]


def kind_of(stream: str) -> JobKind:
    """The job kind a stream holds."""
    return _KIND_OF[stream]


def audio_key(session: str, utt: int) -> str:
    """String with a TTL: the utterance's 16 kHz PCM16, appended as it arrives; jobs name a byte
    range of it."""
    return "stt:audio:%s:%d" % (session, utt)


def results_channel(gateway_id: str) -> str:
    """Pub/sub channel: msgpack results for the sessions that gateway owns."""
    return "stt:results:%s" % gateway_id


def result_key(job_id: str) -> str:
    """A delivered final, kept RESULT_TTL_S: a re-queued job is answered without a second decode."""
    return "stt:result:%s" % job_id


def node_key(kind: str, node_id: str) -> str:
    """Hash with a TTL: the heartbeat of a gateway or decoder (what /status shows)."""
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


def speculative_job_id(session: str, utt: int, audio_end: int) -> str:
    """The would-be final of the utterance's audio up to `audio_end`; its final, when the
    endpoint confirms it, is queued under the same id (the result cache then answers it)."""
    return "%s:%d:s%d" % (session, utt, audio_end)


def turn_job_id(session: str, utt: int, sample: int) -> str:
    """Whether the utterance's speaker was done at session sample `sample` (a pause)."""
    return "%s:%d:t%d" % (session, utt, sample)


def cancelled_key(job_id: str) -> str:
    """Set when a job is no longer wanted (a speculative one whose speaker went on, or any final
    of a session gone for good): a decoder drops it undecoded."""
    return "stt:cancelled:%s" % job_id


def decoding_key(job_id: str) -> str:
    """The decoder decoding a final (or speculative) job now, with a short lease: another decoder
    that reads the same job id waits for that result instead of decoding it again."""
    return "stt:decoding:%s" % job_id


def session_key(session: str) -> str:
    """Hash: what a gateway needs to take the session over (gateway/store/journal.py)."""
    return "stt:session:%s" % session


def session_log(session: str) -> str:
    """List: the messages sent to the session's client, for replay after a resume."""
    return "stt:session:%s:log" % session


def session_resumes(session: str) -> str:
    """Counter of the session's resumes in the last minute."""
    return "stt:session:%s:resumes" % session


def tenant_slots(tenant: str, kind: str) -> str:
    """A tenant's held slots of one kind ("streams", "files"), cluster-wide: a sorted set of
    holders (session or request ids) scored by their lease's expiry (ms)."""
    return "stt:tenant:%s:%s" % (tenant, kind)


def tenant_starts(tenant: str, minute: int) -> str:
    """Counter of a tenant's new sessions in one minute (since the epoch)."""
    return "stt:tenant:%s:starts:%d" % (tenant, minute)


USAGE_TENANTS = "stt:usage:tenants"  # every tenant with usage on record (the admin's view lists them)
UNNAMED_TENANT = "_unnamed"  # usage of API_KEY's keys, or of an open service (no tenant name starts with "_")


def usage_key(tenant: str, day: str) -> str:
    """A tenant's usage on one UTC day (YYYY-MM-DD): a hash of audio_seconds, sessions, files, finals."""
    return "stt:usage:%s:%s" % (tenant, day)
