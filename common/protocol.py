"""What the service and its clients agree on beyond the JSON itself: the WebSocket close codes,
which of them a client may resume after, and how long a session waits for its client to come
back. The gateway closes with these; the client library (client/stream.py) reads them."""

from __future__ import annotations

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_NO_STATUS = 1005
CLOSE_ABNORMAL = 1006  # no close frame: the connection was lost
CLOSE_POLICY = 1008  # too fast, not reading, too many errors, no start in time
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL = 1011
CLOSE_RESTART = 1012  # the gateway is going away: resume the session elsewhere
CLOSE_OVERLOADED = 1013
CLOSE_BAD_REQUEST = 4400
CLOSE_UNAUTHORIZED = 4401
CLOSE_UNKNOWN_SESSION = 4404
CLOSE_TAKEN_OVER = 4409  # the session was resumed on another connection (or is still connected elsewhere)
CLOSE_RESUME_GAP = 4410  # messages the client missed are no longer kept
CLOSE_LIMIT = 4429  # a limit of the caller's key (API_KEYS_FILE): the error says which, and when to retry

# How a refused resume ends the connection: the client may try again (4409: still connected
# elsewhere), or must start a new session.
RESUME_CLOSE = {
    "unknown_session": CLOSE_UNKNOWN_SESSION,
    "bad_token": CLOSE_UNAUTHORIZED,
    "session_in_use": CLOSE_TAKEN_OVER,
    "resume_flood": CLOSE_POLICY,
    "resume_gap": CLOSE_RESUME_GAP,
    "resume_off": CLOSE_UNKNOWN_SESSION,
    "bad_resume": CLOSE_BAD_REQUEST,
    "rate_limit_exceeded": CLOSE_LIMIT,
}
# Close codes after which a client resumes its session: no close frame (a dead gateway, a lost
# network), going away, the gateway restarting (a drain), an internal failure of a gateway.
RESUMABLE_CLOSES = (None, CLOSE_GOING_AWAY, CLOSE_NO_STATUS, CLOSE_ABNORMAL, CLOSE_RESTART)
# The refusal a resuming client waits out: the old connection is not known dead yet.
RETRY_RESUME = ("session_in_use",)
# RESUME_TTL_S's default: a session outlives its connection this long.
RESUME_TTL_S = 60.0
